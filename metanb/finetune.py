"""Test-time adaptation: fit a retrained base to a new task from a few support batches.

The point of LoRA-ML is that its base is a rank-k step away from every task, so the natural
test is PEFT LoRA fine-tuning (:func:`finetune_lora`); :func:`finetune_head` (the classifier
only) is the cheaper baseline. Both train a deep copy, so one base serves every rank and seed,
and both run the same loop as retraining (:func:`metanb.retrain.run_retraining`, method
``standard`` on the one new task): same optimiser, schedule, seeding and devices.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora import check_rank, find_target_modules, use_tasks
from metanb.retrain import RetrainConfig, run_retraining
from metanb.seeding import seed_everything

Batch = Mapping[str, torch.Tensor]


def _fit(model: nn.Module, support_batches: Iterable[Batch], steps: int, lr: float, seed: int,
         progress: bool, options: dict[str, Any]) -> nn.Module:
    """Train ``model``'s trainable parameters on one task with the shared retraining loop."""
    config = RetrainConfig.from_options(
        method="standard", steps=steps, lr=lr, seed=seed, tasks_per_step=1, **options)
    return run_retraining(model, [support_batches], config, progress=progress).model


def finetune_lora(
    model: nn.Module, support_batches: Iterable[Batch], rank: int = 4,
    target_modules: str | Sequence[str] = ("query", "value"), steps: int = 50, lr: float = 1e-3,
    seed: int = 0, progress: bool = False, alpha: float | None = None, dropout: float = 0.0,
    modules_to_save: Sequence[str] | None = None, **options: Any,
) -> nn.Module:
    """A ``peft.PeftModel``: a copy of ``model`` with a fresh rank-``rank`` LoRA, fitted.

    Only the adapter trains (plus ``modules_to_save``, e.g. ``["classifier"]``); ``alpha``
    defaults to 2 * rank as in :func:`metanb.retrain.retrain`. ``options`` go to the loop
    (warmup, weight_decay, max_grad_norm, device, ...).
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise MetanbError(f"rank must be at least 1, got {rank}")
    for name in find_target_modules(model, target_modules):
        check_rank(model.get_submodule(name), rank, name)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
        target_modules=targets, bias="none",
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    seed_everything(seed)  # the adapters' A matrices are random
    with warnings.catch_warnings():  # peft 0.21 + transformers 5 deprecation noise
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
        peft_model = get_peft_model(copy.deepcopy(model), config)
    return _fit(peft_model, support_batches, steps, lr, seed, progress, options)


def last_linear_name(model: nn.Module) -> str:
    """The last ``nn.Linear`` registered in ``model``: the classifier of HF task models."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise MetanbError("the model has no nn.Linear layer to fine-tune as its head")
    return names[-1]


def finetune_head(
    model: nn.Module, support_batches: Iterable[Batch], steps: int = 50, lr: float = 1e-3,
    seed: int = 0, head: str | None = None, progress: bool = False, **options: Any,
) -> nn.Module:
    """A copy of ``model`` with only its head (default: the last ``nn.Linear``) fitted."""
    head = head or last_linear_name(model)
    tuned = copy.deepcopy(model)
    try:
        head_module = tuned.get_submodule(head)
    except AttributeError:
        raise MetanbError(f"the model has no module named {head!r} to use as its head") from None
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in head_module.parameters():
        p.requires_grad_(True)
    tuned = _fit(tuned, support_batches, steps, lr, seed, progress, options)
    for p in tuned.parameters():  # same trainability as the input model
        p.requires_grad_(True)
    return tuned


def _evaluate(model: nn.Module, batches: Iterable[Batch], task: int | None) -> tuple[float, float]:
    """(summed loss, number of correct argmax predictions) and the example count."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss = correct = count = 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                if "labels" not in batch:
                    raise MetanbError("evaluation batches need 'labels'")
                n = batch["labels"].shape[0]
                ids = torch.full((n,), task, dtype=torch.long) if task is not None else None
                with use_tasks(model, ids) if ids is not None else nullcontext():
                    out = model(**batch)
                loss += out.loss.item() * n
                correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise MetanbError("no evaluation examples: the batches are empty")
    return loss / count, correct / count


def evaluate_accuracy(model: nn.Module, batches: Iterable[Batch], task: int | None = None) -> float:
    """Fraction of examples whose argmax logit is the label (hits@1 for multiple choice).

    ``task`` evaluates a multi-task adapted model (:mod:`metanb.lora`) with that task's adapter.
    """
    return _evaluate(model, batches, task)[1]


def evaluate_loss(model: nn.Module, batches: Iterable[Batch], task: int | None = None) -> float:
    """Mean per-example loss over ``batches`` (each batch's ``.loss`` weighted by its size)."""
    return _evaluate(model, batches, task)[0]
