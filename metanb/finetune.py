"""Test-time adaptation: fit a retrained base to a new task from a few support batches.

The point of LoRA-ML is that its base is a rank-k step away from every task, so the natural
test is PEFT LoRA fine-tuning (:func:`finetune_lora`); :func:`finetune_head` (the classifier
only) is the cheaper baseline. Both train a deep copy, so one base serves every rank and seed,
and both run the same loop as retraining (:func:`metanb.retrain.run_retraining`, method
``standard`` on the one new task): same optimiser, schedule, seeding and devices.

The paper fine-tunes a new task with a *fresh* head (``fresh=["classifier"]``: the module is
re-initialised, seeded, in the copy, so nothing of the retraining tasks' heads is used) and
reports the query accuracy after the last epoch and at the best one: pass a
:class:`EpochMonitor` as ``monitor`` to score the model every epoch during the fit.

Evaluation: accuracy and mean loss for classification / multiple choice, hits@1 of a
cross-encoder (:func:`evaluate_hits_at_1`), and for causal
language models the per-token loss and perplexity (:func:`evaluate_causal_lm`), each for one
task's adapter of a multi-task model when ``task`` is given.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora import check_rank, fan_in_fan_out, find_target_modules, use_tasks
from metanb.models import IGNORE_INDEX, causal_lm_labels
from metanb.retrain import RetrainConfig, run_retraining
from metanb.seeding import seed_everything

Batch = Mapping[str, torch.Tensor]


class EpochMonitor:
    """Scores the model being trained every ``every`` optimiser steps (and after the last).

    It plugs into the loop where a :class:`metanb.retrain.checkpoint.Checkpoint` does (the loop
    calls ``due`` and ``save`` on the main process), but instead of writing a file it calls
    ``score(model)`` on the model in training, in place, and keeps the result in ``scores``.
    ``keep_best`` also keeps a CPU copy of the model at the best score so far (``best``), the
    retraining checkpoint the paper keeps. It never resumes (``load`` returns None): a killed
    run starts over.
    """

    def __init__(self, score: Callable[[nn.Module], float], every: int,
                 keep_best: bool = False) -> None:
        if every < 1:
            raise MetanbError(f"an epoch monitor needs every >= 1 step, got {every}")
        self.score, self.every, self.keep_best = score, every, keep_best
        self.model: nn.Module | None = None  # set by the caller before the loop starts
        self.scores: list[float] = []
        self.best: nn.Module | None = None
        self.best_index: int | None = None

    def load(self, config: Any, num_tasks: int) -> None:
        return None

    def due(self, done: int, total: int) -> bool:
        return done % self.every == 0 or done == total

    def save(self, state: dict[str, Any]) -> None:
        if self.model is None:
            raise MetanbError("EpochMonitor.model is not set: give it the model being trained")
        value = float(self.score(self.model))
        self.scores.append(value)
        if self.best_index is None or value > self.scores[self.best_index]:
            self.best_index = len(self.scores) - 1
            if self.keep_best:
                self.best = copy.deepcopy(self.model).to("cpu")


def _fit(model: nn.Module, support_batches: Iterable[Batch], steps: int, lr: float, seed: int,
         progress: bool, options: dict[str, Any], monitor: EpochMonitor | None = None
         ) -> nn.Module:
    """Train ``model``'s trainable parameters on one task with the shared retraining loop."""
    config = RetrainConfig.from_options(
        method="standard", steps=steps, lr=lr, seed=seed, tasks_per_step=1, **options)
    if monitor is not None:
        monitor.model = model  # the loop trains ``model`` in place
    return run_retraining(model, [support_batches], config, saver=monitor,  # type: ignore[arg-type]
                          progress=progress).model


def reinit_modules(model: nn.Module, names: Sequence[str], seed: int) -> nn.Module:
    """Re-initialise the modules ``names`` of ``model`` in place, seeded: a fresh head.

    A Hugging Face model's own ``_init_weights`` is used (the init its heads are born with),
    other modules' ``reset_parameters``.
    """
    seed_everything(seed)
    init = getattr(model, "_init_weights", None)
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise MetanbError(f"the model has no module named {name!r} to re-initialise") from None
        for sub in module.modules():
            if init is not None:
                init(sub)
            elif hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return model


def finetune_lora(
    model: nn.Module, support_batches: Iterable[Batch], rank: int = 4,
    target_modules: str | Sequence[str] = ("query", "value"), steps: int = 50, lr: float = 1e-3,
    seed: int = 0, progress: bool = False, alpha: float | None = None, dropout: float = 0.0,
    modules_to_save: Sequence[str] | None = None, fresh: Sequence[str] = (),
    monitor: EpochMonitor | None = None, **options: Any,
) -> nn.Module:
    """A ``peft.PeftModel``: a copy of ``model`` with a fresh rank-``rank`` LoRA, fitted.

    Only the adapter trains (plus ``modules_to_save``, e.g. ``["classifier"]``); ``alpha``
    defaults to 2 * rank as in :func:`metanb.retrain.retrain`. ``fresh`` names modules
    re-initialised in the copy first (a fresh head); ``monitor`` scores every epoch.
    ``options`` go to the loop (warmup, weight_decay, max_grad_norm, device, ...).
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise MetanbError(f"rank must be at least 1, got {rank}")
    names = find_target_modules(model, target_modules)
    for name in names:
        check_rank(model.get_submodule(name), rank, name)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
        target_modules=targets, bias="none",
        fan_in_fan_out=fan_in_fan_out(model.get_submodule(n) for n in names),  # GPT-2's Conv1D
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    base = reinit_modules(copy.deepcopy(model), fresh, seed) if fresh else copy.deepcopy(model)
    seed_everything(seed)  # the adapters' A matrices are random
    with warnings.catch_warnings():  # peft 0.21 + transformers 5 deprecation noise
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
        peft_model = get_peft_model(base, config)
    return _fit(peft_model, support_batches, steps, lr, seed, progress, options, monitor)


def last_linear_name(model: nn.Module) -> str:
    """The last ``nn.Linear`` registered in ``model``: the classifier of HF task models."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise MetanbError("the model has no nn.Linear layer to fine-tune as its head")
    return names[-1]


def finetune_head(
    model: nn.Module, support_batches: Iterable[Batch], steps: int = 50, lr: float = 1e-3,
    seed: int = 0, head: str | None = None, progress: bool = False, fresh: bool = False,
    monitor: EpochMonitor | None = None, **options: Any,
) -> nn.Module:
    """A copy of ``model`` with only its head (default: the last ``nn.Linear``) fitted;
    ``fresh`` re-initialises the head first, ``monitor`` scores every epoch."""
    head = head or last_linear_name(model)
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    tuned = copy.deepcopy(model)
    try:
        head_module = tuned.get_submodule(head)
    except AttributeError:
        raise MetanbError(f"the model has no module named {head!r} to use as its head") from None
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in head_module.parameters():
        p.requires_grad_(True)
    if fresh:
        reinit_modules(tuned, [head], seed)
    tuned = _fit(tuned, support_batches, steps, lr, seed, progress, options, monitor)
    for n, p in tuned.named_parameters():  # the same trainability as the input model
        p.requires_grad_(trainable.get(n, p.requires_grad))
    return tuned


def _outputs(model: nn.Module, batches: Iterable[Batch], task: int | None,
             required: str, route: Route | None = None) -> Iterator[tuple[Batch, Any]]:
    """Each batch (on the model's device) with the model's output on it: eval mode, no
    gradients, task ``task``'s adapter for every example; the model's mode comes back after."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            if required not in batch:
                raise MetanbError(f"evaluation batches need {required!r}")
            n = batch[required].shape[0]
            routing = (use_tasks(model, [task] * n) if task is not None and route is None
                       else route(torch.full((n,), task or 0, dtype=torch.long))
                       if route is not None else nullcontext())
            with torch.no_grad(), routing:
                out = model(**batch)
            yield batch, out
    finally:
        model.train(was_training)


Route = Callable[[torch.Tensor], Any]


def _evaluate(model: nn.Module, batches: Iterable[Batch], task: int | None,
              route: Route | None = None) -> tuple[float, float]:
    """(mean per-example loss, fraction of argmax hits) over ``batches``, in one pass."""
    loss = correct = count = 0.0
    for batch, out in _outputs(model, batches, task, "labels", route):
        n = batch["labels"].shape[0]
        loss += out.loss.item() * n
        correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
        count += n
    if count == 0:
        raise MetanbError("no evaluation examples: the batches are empty")
    return loss / count, correct / count


def evaluate_accuracy(model: nn.Module, batches: Iterable[Batch], task: int | None = None,
                      route: Route | None = None) -> float:
    """Fraction of examples whose argmax logit is the label (hits@1 for multiple choice).

    ``task`` evaluates a multi-task adapted model (:mod:`metanb.lora`) with that task's adapter;
    ``route`` (given the per-example task ids) is a context manager for other routing, e.g.
    :func:`metanb.retrain.loop.route_tasks` for adapters *and* per-task heads.
    """
    return _evaluate(model, batches, task, route)[1]


def evaluate_hits_at_1(model: nn.Module, batches: Iterable[Batch], group_size: int,
                       task: int | None = None, route: Route | None = None) -> float:
    """Hits@1 of a 2-label cross-encoder over flattened pair batches
    (:func:`metanb.data.make_cross_encoder_batches`): the fraction of examples whose true reply
    has the largest positive logit among its ``group_size`` pairs.

    ``task`` uses that task's adapter of a multi-task model; ``route`` (given the per-row task
    ids) is a context manager for other routing, e.g. per-task heads during retraining.
    """
    from metanb.data.cross_encoder import hits_at_1

    hits = count = 0.0
    for batch, out in _outputs(model, batches, task, "labels", route):
        h = hits_at_1(out.logits.float(), batch["labels"], group_size)
        hits += h.sum().item()
        count += h.numel()
    if count == 0:
        raise MetanbError("no evaluation examples: the batches are empty")
    return hits / count


def evaluate_loss(model: nn.Module, batches: Iterable[Batch], task: int | None = None) -> float:
    """Mean per-example loss over ``batches`` (each batch's ``.loss`` weighted by its size)."""
    return _evaluate(model, batches, task)[0]


@dataclass(frozen=True)
class LanguageModelScore:
    """Next-token cross-entropy per scored token, and its exponential, the perplexity."""

    loss: float
    perplexity: float
    tokens: int


def evaluate_causal_lm(model: nn.Module, batches: Iterable[Batch],
                       task: int | None = None) -> LanguageModelScore:
    """Per-token loss and perplexity of a causal LM over ``batches``, pooled over all tokens.

    A batch's ``labels`` default to its input ids with padding set to -100
    (:func:`metanb.models.causal_lm_labels`); token i is scored by the logits at i - 1, as
    Hugging Face's loss does. ``task`` evaluates one task's adapter of a multi-task model.
    """
    total, tokens = 0.0, 0
    for batch, out in _outputs(model, batches, task, "input_ids"):
        labels = batch.get("labels")
        if labels is None:
            labels = causal_lm_labels(batch["input_ids"], batch.get("attention_mask"))
        targets = labels[:, 1:]
        total += nn.functional.cross_entropy(
            out.logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
            ignore_index=IGNORE_INDEX, reduction="sum").item()
        tokens += int((targets != IGNORE_INDEX).sum())
    if tokens == 0:
        raise MetanbError("no tokens to score: the batches are empty or all padding")
    loss = total / tokens
    return LanguageModelScore(loss=loss, perplexity=math.exp(loss), tokens=tokens)
