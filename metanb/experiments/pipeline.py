"""The ConvAI2 pipeline, stage by stage: data -> tasks -> (pretrain) -> retrain -> fine-tune ->
evaluate. :func:`convai2_cell` strings the stages together for the grid runner; chapter 5 calls
the stages one at a time.

Every stage is a function with explicit inputs and a seed. What a run seed changes: which
personas are retraining / held-out, which dialogues of a held-out persona are support / query,
the model's random initialisation and every shuffle. What it does not change: the data set
itself (``data.seed``), so seeds measure the variability of the whole procedure on one corpus.

The paper's setup (profile ``paper``) switches on, one setting each: tasks = PAML's persona
clusters cut as the paper does (``tasks.split=clusters``: fixed for every seed, then seeds vary
initialisation and training only), the cross-encoder (``tasks.format``), per-task heads
(``retrain.task_heads``), schedules in epochs, the retrained base kept at the epoch of best
retraining-validation accuracy (``retrain.select``), a fresh head for every new task
(``finetune.fresh_head``), the query set scored after every fine-tuning epoch (records carry
``accuracy``, last epoch, and ``accuracy_best``, each task's best epoch) and the coupled rank
sweep (``finetune.match_retrain_rank``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig, check_persona_count
from metanb.experiments.grid import Cell, CellContext, CellResult, FinetuneSpec
from metanb.experiments.runner import BASE_FILE
from metanb.io import atomic_save_torch, load_torch
from metanb.provenance import git_commit, state_dict_sha256

if TYPE_CHECKING:
    from metanb.retrain import RetrainResult

# seeds of derived random streams, kept apart so that adding a stage never shifts another
PRETRAIN_DATA_OFFSET = 7919  # generator seed of the (disjoint) pretraining personas
FINETUNE_SEED_STRIDE = 1000  # fine-tuning seed of held-out persona i under run seed s: s*1000+i


# ---- data ------------------------------------------------------------------------------------

def load_dialogues(config: ExperimentConfig, generator_seed: int | None = None,
                   personas: int | None = None) -> Any:
    """The data of ``config.data``: dialogues generated offline, read from ParlAI or the Hub;
    for ``tasks.split=clusters`` the whole Persona-Chat folder (both splits and their maps)."""
    from metanb import data

    d = config.data
    config.check_inputs()
    if config.tasks.split == "clusters":
        return data.load_persona_chat_folder(d.path or "")
    if d.source == "generator":
        return data.generate_persona_chat(
            personas=personas if personas is not None else d.personas,
            dialogues_per_persona=d.dialogues_per_persona,
            candidates=config.tasks.candidates,
            seed=d.seed if generator_seed is None else generator_seed,
            distractors=d.distractors,
        )
    if d.source == "parlai":
        return data.read_parlai(data.sample_path() if d.path == "sample" else Path(d.path or ""))
    return data.load_hf_persona_chat(d.hf_name, split=d.hf_split)


def all_dialogues(loaded: Any) -> list[Any]:
    """Every dialogue of what :func:`load_dialogues` returned (for a tokenizer's vocabulary)."""
    from metanb.data import PersonaChatFolder

    if isinstance(loaded, PersonaChatFolder):
        return list(loaded.train) + list(loaded.valid)
    return list(loaded)


def persona_split(config: ExperimentConfig, dialogues: Any, seed: int
                  ) -> tuple[list[Any], list[Any]]:
    """(retraining tasks, new tasks) for a run seed.

    ``tasks.split=personas``: one persona per task, split at random by the seed (with
    ``tasks.nested``, the new personas do not depend on ``tasks.retrain``).
    ``tasks.split=clusters``: the paper's cut, the same for every seed: the largest train
    clusters (their last ``validation_dialogues`` held out for retraining validation) and the
    largest valid clusters (their last ``query_dialogues`` as the query set).
    """
    from metanb.data import group_by_persona, new_tasks, retraining_tasks, split_tasks

    t = config.tasks
    if t.split == "clusters":
        return (retraining_tasks(dialogues.train, dialogues.train_map, n_tasks=t.retrain,
                                 validation_dialogues=t.validation_dialogues),
                new_tasks(dialogues.valid, dialogues.valid_map, n_tasks=t.heldout,
                          query_dialogues=t.query_dialogues))
    tasks = group_by_persona(dialogues)
    check_persona_count(t.retrain, t.heldout, len(tasks), f"the {config.data.source} data")
    return split_tasks(tasks, retrain=t.retrain, heldout=t.heldout, seed=seed, nested=t.nested)


@dataclass
class HeldoutTask:
    """A new task, encoded: support batches to fine-tune on, query batches to score."""

    key: str
    support: list[dict[str, torch.Tensor]]
    query: list[dict[str, torch.Tensor]]
    n_support: int
    n_query: int


def encode(config: ExperimentConfig, examples: Sequence[Any], tokenizer: Any, persona: Any,
           seed: int) -> dict[str, torch.Tensor]:
    """Examples -> tensors in ``tasks.format``: multiple choice, or the paper's cross-encoder
    (every (context, candidate) pair, 2 labels)."""
    from metanb.data import encode_cross_encoder, encode_multiple_choice

    t = config.tasks
    if t.format == "cross-encoder":
        return encode_cross_encoder(list(examples), tokenizer, group_size=t.candidates,
                                    max_length=t.max_length)
    return encode_multiple_choice(
        list(examples), tokenizer, max_length=t.max_length,
        num_candidates=t.candidates, seed=seed,
        include_persona=config.data.include_persona, persona=persona)


def batch(config: ExperimentConfig, encoded: dict[str, torch.Tensor], size: int, shuffle: bool,
          seed: int) -> list[dict[str, torch.Tensor]]:
    """Encoded examples -> batches of ``size`` examples (cross-encoder: flattened pairs)."""
    from metanb.data import make_batches, make_cross_encoder_batches

    if config.tasks.format == "cross-encoder":
        return make_cross_encoder_batches(encoded, size, shuffle=shuffle, seed=seed)
    return make_batches(encoded, size, shuffle=shuffle, seed=seed)


def _train_examples(task: Any) -> list[Any]:
    """What a retraining task trains on: a cluster's dialogues but its validation ones."""
    return list(task.train) if hasattr(task, "train_dialogues") else list(task.examples)


def _persona(task: Any) -> Any:
    return getattr(task, "persona", None)


def pad_to_common_length(tasks: list[list[dict[str, torch.Tensor]]], pad_id: int
                         ) -> list[list[dict[str, torch.Tensor]]]:
    """Right-pad every cross-encoder batch to the longest one, so batches of several tasks can
    be mixed in one step (padding is masked: no output changes)."""
    length = max(b["input_ids"].shape[1] for task in tasks for b in task)

    def pad(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        extra = length - b["input_ids"].shape[1]
        if extra == 0:
            return b
        return {**b,
                "input_ids": torch.nn.functional.pad(b["input_ids"], (0, extra), value=pad_id),
                "attention_mask": torch.nn.functional.pad(b["attention_mask"], (0, extra))}

    return [[pad(b) for b in task] for task in tasks]


def retrain_batches(config: ExperimentConfig, tasks: Sequence[Any], tokenizer: Any, seed: int,
                    batch_size: int | None = None) -> list[list[dict[str, torch.Tensor]]]:
    """One list of batches per retraining task (what :func:`metanb.retrain.retrain` takes)."""
    size = batch_size or config.retrain.batch_size
    out = [batch(config, encode(config, _train_examples(task), tokenizer, _persona(task), seed + i),
                 size, shuffle=True, seed=seed + i)
           for i, task in enumerate(tasks)]
    if config.tasks.format == "cross-encoder" and tasks_per_step(config, len(out)) > 1:
        out = pad_to_common_length(out, tokenizer.pad_token_id)
    return out


def validation_batches(config: ExperimentConfig, tasks: Sequence[Any], tokenizer: Any,
                       seed: int) -> list[list[dict[str, torch.Tensor]]] | None:
    """The retraining-validation batches of each cluster task (None for single personas)."""
    if config.tasks.split != "clusters":
        return None
    return [batch(config, encode(config, task.heldout, tokenizer, None, seed + i),
                  config.finetune.eval_batch_size, shuffle=False, seed=seed + i)
            for i, task in enumerate(tasks)]


def heldout_tasks(config: ExperimentConfig, tasks: Sequence[Any], tokenizer: Any, seed: int
                  ) -> list[HeldoutTask]:
    """Support / query split (by whole dialogues) and encoding of every new task: a persona's
    at random per seed, a cluster's last ``query_dialogues`` as the paper does."""
    from metanb.data import split_support_query

    out = []
    for i, task in enumerate(tasks):
        s = seed * FINETUNE_SEED_STRIDE + i
        if config.tasks.split == "clusters":
            support, query = list(task.train), list(task.heldout)
        else:
            support, query = split_support_query(task, config.tasks.support, seed=s)
        out.append(HeldoutTask(
            key=_short_key(i, task),
            support=batch(config, encode(config, support, tokenizer, _persona(task), s),
                          config.finetune.batch_size, shuffle=True, seed=s),
            query=batch(config, encode(config, query, tokenizer, _persona(task), s),
                        config.finetune.eval_batch_size, shuffle=False, seed=s),
            n_support=len(support), n_query=len(query)))
    return out


def _short_key(index: int, task: Any) -> str:
    """A readable, unique task id for records: its index and first persona sentence (or the
    cluster's id)."""
    persona = _persona(task)
    return f"{index}: {persona[0][:50] if persona else task.key[:50]}"


# ---- model -----------------------------------------------------------------------------------

def new_model(config: ExperimentConfig, texts: Sequence[str], seed: int) -> tuple[Any, Any]:
    """A freshly initialised (or freshly loaded pretrained) model and its tokenizer, with the
    head of ``tasks.format`` (a 2-label sequence classifier for the cross-encoder)."""
    from metanb.models import MULTIPLE_CHOICE, SEQUENCE_CLASSIFICATION, load_model

    head = SEQUENCE_CLASSIFICATION if config.tasks.format == "cross-encoder" else MULTIPLE_CHOICE
    texts = list(texts) if config.model.name == "tiny-roberta" else None
    model, tokenizer = load_model(config.model.name, texts=texts, seed=seed, head=head)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def pretrain(model: Any, batches: list[list[dict[str, torch.Tensor]]],
             config: ExperimentConfig, seed: int, progress: bool = False) -> Any:
    """Short standard training on pooled data of *other* personas, shared by every method.

    A randomly initialised tiny model knows no language; without this stage every method
    starts from noise and retraining differences drown in it. It plays the role of the
    pre-training a real foundation model already had, so it never sees retraining or held-out
    personas. Skipped (``pretrain.steps = 0``) for pretrained models.
    """
    from metanb.retrain import retrain

    pooled = [[b for task in batches for b in task]]
    res = retrain(model, pooled, method="standard", steps=config.pretrain.steps,
                  lr=config.pretrain.lr, target_modules=tuple(config.model.target_modules),
                  seed=seed, progress=progress, device=config.device)
    return res.model


# ---- schedules in epochs ---------------------------------------------------------------------

def tasks_per_step(config: ExperimentConfig, num_tasks: int) -> int:
    """How many tasks one retraining step mixes (the loop's rule)."""
    from metanb.retrain.config import MAX_DEFAULT_TASKS_PER_STEP

    return min(num_tasks, config.retrain.tasks_per_step or MAX_DEFAULT_TASKS_PER_STEP)


def retrain_steps_per_epoch(config: ExperimentConfig, method: str,
                            tasks: Sequence[Sequence[Any]]) -> int:
    """Optimiser steps of one retraining epoch.

    Methods that take one update per step on their tasks' batches (SR, LoRA-ML, last-layer-ML):
    every batch of every task once, ``ceil(batches / tasks per step)`` steps (with one task per
    step, one step per task batch, as the paper's loops). Reptile, whose step runs an inner
    loop on each of its tasks: every task once, ``ceil(T / tasks per step)`` steps (the
    paper's Reptile epoch: each task once, 20 inner steps).
    """
    from metanb.retrain.methods import get_method, joint_step

    k = tasks_per_step(config, len(tasks))
    units = sum(len(t) for t in tasks) if get_method(method).step is joint_step else len(tasks)
    return max(1, math.ceil(units / k))


def run_config(config: ExperimentConfig, method: str, rank: int, seed: int,
               tasks: Sequence[Sequence[Any]]) -> tuple[Any, int]:
    """The :class:`metanb.retrain.RetrainConfig` of one cell and the steps of an epoch (the
    whole run when the schedule is in steps)."""
    run = config.retrain.run_config(method, rank, config.model.target_modules, seed,
                                    config.device)
    if config.retrain.epochs is None:
        return run, run.steps
    per_epoch = retrain_steps_per_epoch(config, method, tasks)
    return run.with_options(steps=per_epoch * config.retrain.epochs), per_epoch


# ---- retraining ------------------------------------------------------------------------------

def retrain_base(model: Any, tasks: list[list[dict[str, torch.Tensor]]], method: str,
                 rank: int, config: ExperimentConfig, seed: int, checkpoint: Path | None,
                 progress: bool = False) -> RetrainResult:
    """Retrain the base with any registered method (the run's settings come straight from
    ``config.retrain``, which embeds the loop's own config; ``retrain.epochs`` sets the steps).
    The last step's base is returned: see :func:`retrain_selected` for the paper's choice."""
    from metanb.retrain import retrain

    run, _ = run_config(config, method, rank, seed, tasks)
    return retrain(model, tasks, run, checkpoint=checkpoint,
                   checkpoint_every=config.retrain.checkpoint_every, progress=progress)


def validation_accuracy(model: Any, validation: Sequence[Sequence[Any]],
                        config: ExperimentConfig) -> list[float]:
    """Each retraining task's validation accuracy, through its own adapter and head when the
    model carries them (the paper's ``validate``)."""
    from metanb.finetune import evaluate_accuracy, evaluate_hits_at_1
    from metanb.retrain.loop import route_tasks

    def route(ids: torch.Tensor) -> Any:
        return route_tasks(model, ids)

    accs = []
    for task, batches in enumerate(validation):
        if config.tasks.format == "cross-encoder":
            accs.append(evaluate_hits_at_1(model, batches, config.tasks.candidates, task=task,
                                           route=route))
        else:
            accs.append(evaluate_accuracy(model, batches, task=task, route=route))
    return accs


def retrain_selected(model: Any, tasks: list[list[dict[str, torch.Tensor]]],
                     validation: Sequence[Sequence[Any]], method: str, rank: int,
                     config: ExperimentConfig, seed: int, progress: bool = False
                     ) -> tuple[RetrainResult, dict[str, Any]]:
    """Retrain epoch by epoch and keep the epoch with the best mean retraining-validation
    accuracy (the paper's checkpoint), each task scored through its own adapter and head.

    Returns the result (its ``model`` the chosen base, adapters and task heads removed) and
    what the choice rests on: the mean validation accuracy of every epoch and the epoch kept.
    No mid-run checkpoint: an interrupted cell retrains from the start.
    """
    from metanb.finetune import EpochMonitor
    from metanb.lora import multi_lora_layers, remove_multi_lora
    from metanb.retrain import run_retraining
    from metanb.retrain.heads import remove_task_heads, task_heads

    run, per_epoch = run_config(config, method, rank, seed, tasks)
    monitor = EpochMonitor(
        lambda m: sum(accs := validation_accuracy(m, validation, config)) / len(accs),
        every=per_epoch, keep_best=True)
    target = copy.deepcopy(model)
    monitor.model = target  # the loop trains ``target`` in place
    res = run_retraining(target, list(tasks), run, saver=monitor,  # type: ignore[arg-type]
                         progress=progress)
    best = monitor.best
    assert best is not None and monitor.best_index is not None
    if task_heads(best):
        remove_task_heads(best)
    if multi_lora_layers(best):
        remove_multi_lora(best)
    best.train(res.model.training)
    info = {"retrain_validation": [round(v, 6) for v in monitor.scores],
            "retrain_best_epoch": monitor.best_index + 1,
            "retrain_steps": run.steps}
    return dataclasses.replace(res, model=best.to(next(res.model.parameters()).device)), info


# ---- fine-tuning a new task ------------------------------------------------------------------

def score(model: Any, batches: Sequence[Any], config: ExperimentConfig) -> float:
    """Accuracy on a new task's query batches: hits@1 of the cross-encoder, or the multiple-
    choice argmax (the same quantity: the true reply ranked first among the candidates)."""
    from metanb.finetune import evaluate_accuracy, evaluate_hits_at_1

    if config.tasks.format == "cross-encoder":
        return evaluate_hits_at_1(model, batches, config.tasks.candidates)
    return evaluate_accuracy(model, batches)


def adapt_and_score(model: Any, spec: FinetuneSpec, task: HeldoutTask,
                    config: ExperimentConfig, seed: int) -> tuple[float, float]:
    """(accuracy after the last epoch, accuracy at the best epoch) of one new task after
    adapting ``model`` with ``spec``; both the same without an epoch schedule.

    ``finetune.fresh_head`` discards the retrained head: a re-initialised head (seeded) is
    trained with the fresh LoRA adapter, or alone for head-only fine-tuning; the base is
    frozen either way.
    """
    from metanb.finetune import EpochMonitor, finetune_head, finetune_lora, reinit_modules

    f = config.finetune
    if spec.kind == "none":
        scored = model
        if f.fresh_head:  # the reference: the base with the fresh head it would start from
            scored = reinit_modules(copy.deepcopy(model), [_head_name(model, config)], seed)
        value = score(scored, task.query, config)
        return value, value
    steps = f.steps if f.epochs is None else f.epochs * len(task.support)
    monitor = (EpochMonitor(lambda m: score(m, task.query, config), every=len(task.support))
               if f.epochs is not None else None)
    head = _head_name(model, config)
    loop = {"device": config.device, "weight_decay": f.weight_decay,
            "max_grad_norm": f.max_grad_norm, "schedule_stretch": f.schedule_stretch}
    if spec.kind == "lora":
        adapted = finetune_lora(
            model, task.support, rank=spec.rank,
            target_modules=tuple(config.model.target_modules), steps=steps, lr=f.lr, seed=seed,
            alpha=f.lora_alpha, dropout=f.lora_dropout,
            modules_to_save=[head] if f.fresh_head else None,
            fresh=[head] if f.fresh_head else (), monitor=monitor, **loop)
    else:
        adapted = finetune_head(model, task.support, steps=steps, lr=f.lr, seed=seed, head=head,
                                fresh=f.fresh_head, monitor=monitor, **loop)
    if monitor is None:
        value = score(adapted, task.query, config)
        return value, value
    return monitor.scores[-1], max(monitor.scores)


def _head_name(model: Any, config: ExperimentConfig) -> str:
    from metanb.finetune import last_linear_name

    return config.finetune.head_module or last_linear_name(model)


def evaluate_spec_epochs(model: Any, spec: FinetuneSpec, tasks: Sequence[HeldoutTask],
                         config: ExperimentConfig, seed: int, progress: bool = False
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """Per new task: (accuracy after the last epoch, accuracy at its best epoch)."""
    last: dict[str, float] = {}
    best: dict[str, float] = {}
    for i, task in enumerate(tqdm(tasks, desc=f"fine-tune {spec.label}", leave=False,
                                  mininterval=1.0, disable=not progress)):
        last[task.key], best[task.key] = adapt_and_score(
            model, spec, task, config, seed * FINETUNE_SEED_STRIDE + i)
    return last, best


def evaluate_spec(model: Any, spec: FinetuneSpec, tasks: Sequence[HeldoutTask],
                  config: ExperimentConfig, seed: int, progress: bool = False
                  ) -> dict[str, float]:
    """Accuracy on each new task's query set after adapting with ``spec`` (last epoch)."""
    return evaluate_spec_epochs(model, spec, tasks, config, seed, progress)[0]


# ---- one seed's starting point --------------------------------------------------------------

@dataclass
class Prepared:
    """Everything the cells of one run seed share: the start model and the encoded tasks."""

    model: Any                     # random-init or pretrained (after the optional pretraining)
    tokenizer: Any
    retrain_personas: list[Any]    # PersonaTask / ClusterTask objects (for display)
    retrain_tasks: list[list[dict[str, torch.Tensor]]]
    heldout: list[HeldoutTask]
    validation: list[list[dict[str, torch.Tensor]]] | None = None  # clusters' held-out dialogues


def prepare(config: ExperimentConfig, seed: int, dialogues: Any | None = None,
            pretrain_dialogues: Sequence[Any] | None = None, pretrain_cache: Path | None = None,
            progress: bool = False, write_cache: bool = True) -> Prepared:
    """Data -> task split -> model and tokenizer -> (pretraining) -> encoded tasks.

    ``dialogues`` / ``pretrain_dialogues`` default to :func:`load_dialogues`; pass them to
    reuse data across seeds. ``pretrain_cache`` is a file that holds (or will hold) the
    pretrained weights of this seed, so every method of a seed starts from the same model
    and a resumed run does not pretrain again.
    """
    from metanb.data import corpus_texts, group_by_persona

    if dialogues is None:
        dialogues = load_dialogues(config)
    pretraining = config.pretrain.steps > 0
    if pretraining and config.data.source != "generator":
        raise MetanbError("pretrain.steps > 0 needs data.source=generator (it trains a "
                          "random-init model on separate generated personas); set "
                          "pretrain.steps=0 for pretrained models")
    if pretraining and pretrain_dialogues is None:
        pretrain_dialogues = load_dialogues(
            config, generator_seed=config.data.seed + PRETRAIN_DATA_OFFSET,
            personas=config.pretrain.personas)
    extra = list(pretrain_dialogues or []) if pretraining else []
    retrain_set, heldout_set = persona_split(config, dialogues, seed)
    model, tokenizer = new_model(config, corpus_texts(all_dialogues(dialogues) + extra), seed)
    if pretraining:
        if pretrain_cache is not None and pretrain_cache.exists():
            model.load_state_dict(load_torch(pretrain_cache))
        else:
            batches = retrain_batches(config, group_by_persona(extra), tokenizer, seed,
                                      config.pretrain.batch_size)
            model = pretrain(model, batches, config, seed, progress=progress).to("cpu")
            if pretrain_cache is not None and write_cache:
                atomic_save_torch(pretrain_cache, model.state_dict())
    return Prepared(model=model, tokenizer=tokenizer, retrain_personas=list(retrain_set),
                    retrain_tasks=retrain_batches(config, retrain_set, tokenizer, seed),
                    heldout=heldout_tasks(config, heldout_set, tokenizer, seed),
                    validation=validation_batches(config, retrain_set, tokenizer, seed))


# ---- the cell --------------------------------------------------------------------------------

def _prepared(config: ExperimentConfig, seed: int, ctx: CellContext) -> Prepared:
    """:func:`prepare` for a seed, once per invocation (the data once for every seed)."""
    key = f"seed-{seed}"
    if key not in ctx.cache:
        if "dialogues" not in ctx.cache:
            ctx.cache["dialogues"] = load_dialogues(config)
        for old in [k for k in ctx.cache if k.startswith("seed-")]:
            del ctx.cache[old]  # one seed at a time in memory
        ctx.cache[key] = prepare(
            config, seed, dialogues=ctx.cache["dialogues"],
            pretrain_cache=ctx.shared_dir / f"pretrain-seed{seed}.pt",
            progress=ctx.progress, write_cache=ctx.is_main)
    return ctx.cache[key]


def convai2_cell(cell: Cell, specs: list[FinetuneSpec], ctx: CellContext
                 ) -> Iterator[CellResult]:
    """Retrain one (method, seed, rank) base (or reload it) and evaluate it under each spec.

    The retrained base is saved to the cell's work folder before any evaluation, so an
    interrupted cell resumes with its evaluations, not with retraining.
    """
    config = ctx.config
    prep = _prepared(config, cell.seed, ctx)
    base_path = ctx.workdir / BASE_FILE  # the runner re-runs a partial cell that lacks it
    if base_path.exists():  # retrained before an interruption
        saved = load_torch(base_path)
        model = copy.deepcopy(prep.model)
        model.load_state_dict(saved["state_dict"])
        info = {**saved["info"], "base_sha256": state_dict_sha256(saved["state_dict"])}
        if saved["info"].get("base_sha256", info["base_sha256"]) != info["base_sha256"]:
            raise MetanbError(f"{base_path} does not hold the base it was saved with (sha256 "
                              "differs); delete it to retrain that cell")
    else:
        start = time.perf_counter()
        rank = cell.retrain_rank if cell.retrain_rank is not None else config.retrain.ranks[0]
        chosen: dict[str, Any] = {}
        if config.retrain.select == "validation" and prep.validation is not None:
            res, chosen = retrain_selected(prep.model, prep.retrain_tasks, prep.validation,
                                           cell.method, rank, config, cell.seed,
                                           progress=ctx.progress)
        else:
            res = retrain_base(prep.model, prep.retrain_tasks, cell.method, rank, config,
                               cell.seed, checkpoint=ctx.workdir / "retrain.ckpt",
                               progress=ctx.progress)
        model = res.model
        losses = [h["loss"] for h in res.history]
        # compute beside accuracy: examples through a forward and backward pass (this
        # process), Reptile's inner steps included, so methods compare at equal cost
        info = {**chosen, "retrain_wall_s": round(time.perf_counter() - start, 3),
                "retrain_examples": sum(int(h["examples"]) for h in res.history),
                "retrain_final_loss": float(losses[-1]) if losses else None,
                "retrain_commit": git_commit(),
                "base_sha256": state_dict_sha256(model.state_dict())}
        if ctx.is_main:
            atomic_save_torch(base_path, {"state_dict": model.state_dict(), "info": info})
    model.eval()
    sizes = {"support_examples": sum(t.n_support for t in prep.heldout),
             "query_examples": sum(t.n_query for t in prep.heldout)}
    for spec in specs:
        start = time.perf_counter()
        last, best = evaluate_spec_epochs(model, spec, prep.heldout, config, cell.seed,
                                          progress=ctx.progress)
        # "Best" as the paper's tables: each new task's best epoch, chosen on its query set
        # itself (optimistic); "accuracy" is the last epoch's
        scores = {"accuracy_best": sum(best.values()) / len(best),
                  "accuracy_best_per_task": best}
        yield CellResult(spec=spec, accuracy_per_persona=last,
                         wall_s=time.perf_counter() - start, extra={**info, **sizes, **scores})
