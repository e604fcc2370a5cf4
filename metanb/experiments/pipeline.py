"""The ConvAI2 pipeline, stage by stage: data -> tasks -> (pretrain) -> retrain -> fine-tune ->
evaluate. :func:`convai2_cell` strings the stages together for the grid runner; chapter 5 calls
the stages one at a time.

Every stage is a function with explicit inputs and a seed. What a run seed changes: which
personas are retraining / held-out, which dialogues of a held-out persona are support / query,
the model's random initialisation and every shuffle. What it does not change: the data set
itself (``data.seed``), so seeds measure the variability of the whole procedure on one corpus.
"""

from __future__ import annotations

import copy
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
                   personas: int | None = None) -> list[Any]:
    """The dialogues of ``config.data``: generated offline, read from ParlAI, or from the Hub."""
    from metanb import data

    d = config.data
    if d.source == "generator":
        return data.generate_persona_chat(
            personas=personas if personas is not None else d.personas,
            dialogues_per_persona=d.dialogues_per_persona,
            candidates=config.tasks.candidates,
            seed=d.seed if generator_seed is None else generator_seed,
            distractors=d.distractors,
        )
    if d.source == "parlai":
        path = data.sample_path() if d.path == "sample" else Path(d.path or "")
        return data.read_parlai(path)
    return data.load_hf_persona_chat(d.hf_name, split=d.hf_split)


def persona_split(config: ExperimentConfig, dialogues: Sequence[Any], seed: int
                  ) -> tuple[list[Any], list[Any]]:
    """(retraining personas, held-out personas) for a run seed."""
    from metanb.data import group_by_persona, split_tasks

    tasks = group_by_persona(dialogues)
    t = config.tasks
    check_persona_count(t.retrain, t.heldout, len(tasks), f"the {config.data.source} data")
    return split_tasks(tasks, retrain=t.retrain, heldout=t.heldout, seed=seed)


@dataclass
class HeldoutTask:
    """A new persona, encoded: support batches to fine-tune on, query batches to score."""

    key: str
    support: list[dict[str, torch.Tensor]]
    query: list[dict[str, torch.Tensor]]
    n_support: int
    n_query: int


def encode(config: ExperimentConfig, examples: Sequence[Any], tokenizer: Any, persona: Any,
           seed: int) -> dict[str, torch.Tensor]:
    from metanb.data import encode_multiple_choice

    return encode_multiple_choice(
        list(examples), tokenizer, max_length=config.tasks.max_length,
        num_candidates=config.tasks.candidates, seed=seed,
        include_persona=config.data.include_persona, persona=persona)


def retrain_batches(config: ExperimentConfig, tasks: Sequence[Any], tokenizer: Any, seed: int,
                    batch_size: int | None = None) -> list[list[dict[str, torch.Tensor]]]:
    """One list of batches per retraining persona (what :func:`metanb.retrain.retrain` takes)."""
    from metanb.data import make_batches

    size = batch_size or config.retrain.batch_size
    return [make_batches(encode(config, task.examples, tokenizer, task.persona, seed + i),
                         size, shuffle=True, seed=seed + i)
            for i, task in enumerate(tasks)]


def heldout_tasks(config: ExperimentConfig, tasks: Sequence[Any], tokenizer: Any, seed: int
                  ) -> list[HeldoutTask]:
    """Support / query split (by whole dialogues) and encoding of every held-out persona."""
    from metanb.data import make_batches, split_support_query

    out = []
    for i, task in enumerate(tasks):
        s = seed * FINETUNE_SEED_STRIDE + i
        support, query = split_support_query(task, config.tasks.support, seed=s)
        out.append(HeldoutTask(
            key=_short_key(i, task),
            support=make_batches(encode(config, support, tokenizer, task.persona, s),
                                 config.finetune.batch_size, shuffle=True, seed=s),
            query=make_batches(encode(config, query, tokenizer, task.persona, s),
                               config.finetune.eval_batch_size, shuffle=False, seed=s),
            n_support=len(support), n_query=len(query)))
    return out


def _short_key(index: int, task: Any) -> str:
    """A readable, unique persona id for records: its index and first persona sentence."""
    return f"{index}: {task.persona[0][:50] if task.persona else task.key[:50]}"


# ---- model -----------------------------------------------------------------------------------

def new_model(config: ExperimentConfig, texts: Sequence[str], seed: int) -> tuple[Any, Any]:
    """A freshly initialised (or freshly loaded pretrained) model and its tokenizer."""
    from metanb.models import load_model

    texts = list(texts) if config.model.name == "tiny-roberta" else None
    return load_model(config.model.name, texts=texts, seed=seed)


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


def retrain_base(model: Any, tasks: list[list[dict[str, torch.Tensor]]], method: str,
                 rank: int, config: ExperimentConfig, seed: int, checkpoint: Path | None,
                 progress: bool = False) -> RetrainResult:
    """Retrain the base with any registered method (the run's settings come straight from
    ``config.retrain``, which embeds the loop's own config)."""
    from metanb.retrain import retrain

    run = config.retrain.run_config(method, rank, config.model.target_modules, seed,
                                    config.device)
    return retrain(model, tasks, run, checkpoint=checkpoint,
                   checkpoint_every=config.retrain.checkpoint_every, progress=progress)


def evaluate_spec(model: Any, spec: FinetuneSpec, tasks: Sequence[HeldoutTask],
                  config: ExperimentConfig, seed: int, progress: bool = False
                  ) -> dict[str, float]:
    """Accuracy on each held-out persona's query set after adapting with ``spec``."""
    from metanb.finetune import evaluate_accuracy, finetune_head, finetune_lora

    f = config.finetune
    accs: dict[str, float] = {}
    for i, task in enumerate(tqdm(tasks, desc=f"fine-tune {spec.label}", leave=False,
                                  mininterval=1.0, disable=not progress)):
        s = seed * FINETUNE_SEED_STRIDE + i
        if spec.kind == "none":
            adapted = model
        elif spec.kind == "lora":
            adapted = finetune_lora(model, task.support, rank=spec.rank,
                                    target_modules=tuple(config.model.target_modules),
                                    steps=f.steps, lr=f.lr, seed=s, progress=False,
                                    device=config.device)
        else:
            adapted = finetune_head(model, task.support, steps=f.steps, lr=f.lr, seed=s,
                                    device=config.device)
        accs[task.key] = float(evaluate_accuracy(adapted, task.query))
    return accs


# ---- one seed's starting point --------------------------------------------------------------

@dataclass
class Prepared:
    """Everything the cells of one run seed share: the start model and the encoded tasks."""

    model: Any                     # random-init or pretrained (after the optional pretraining)
    tokenizer: Any
    retrain_personas: list[Any]    # PersonaTask objects (for display)
    retrain_tasks: list[list[dict[str, torch.Tensor]]]
    heldout: list[HeldoutTask]


def prepare(config: ExperimentConfig, seed: int, dialogues: Sequence[Any] | None = None,
            pretrain_dialogues: Sequence[Any] | None = None, pretrain_cache: Path | None = None,
            progress: bool = False, write_cache: bool = True) -> Prepared:
    """Data -> persona split -> model and tokenizer -> (pretraining) -> encoded tasks.

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
    model, tokenizer = new_model(config, corpus_texts(list(dialogues) + extra), seed)
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
                    heldout=heldout_tasks(config, heldout_set, tokenizer, seed))


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
        res = retrain_base(prep.model, prep.retrain_tasks, cell.method, rank, config,
                           cell.seed, checkpoint=ctx.workdir / "retrain.ckpt",
                           progress=ctx.progress)
        model = res.model
        losses = [h["loss"] for h in res.history]
        info = {"retrain_wall_s": round(time.perf_counter() - start, 3),
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
        accs = evaluate_spec(model, spec, prep.heldout, config, cell.seed, progress=ctx.progress)
        yield CellResult(spec=spec, accuracy_per_persona=accs,
                         wall_s=time.perf_counter() - start, extra={**info, **sizes})
