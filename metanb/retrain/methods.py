"""The registry of retraining methods: the one place a method is defined.

A method is which parameters exist and train (does it attach one adapter per task?) and how
one optimisation step is taken (one update on a mixed batch, or Reptile's inner loop and
interpolation). Everything that lists methods (the experiment config, the CLI's choices,
results tables, plots) asks this registry, so registering a method is all it takes to run it
through ``python -m metanb run``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from metanb.errors import MetanbError
from metanb.retrain.optim import make_optimizer

if TYPE_CHECKING:
    from metanb.retrain.config import RetrainConfig
    from metanb.retrain.loop import StepContext

StepFn = Callable[["StepContext", Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class RetrainMethod:
    """A retraining method: whether it attaches per-task adapters, and how a step is taken."""

    name: str
    description: str
    step: StepFn
    task_adapters: bool = False
    task_heads: str = "never"  # per-task heads (config.task_heads): never | optional | required
    label: str = ""  # how tables and figures name it; the name when empty
    # task_order in-turn: the official loop's order (streams.turn_order): blocks | round-robin |
    # tasks (each task once an epoch)
    turns: str = "round-robin"
    color: str | None = None  # its colour in every figure (None: one from the book's palette)

    @property
    def rankless(self) -> bool:
        """No task adapters, so no retraining rank: one grid cell per (method, seed)."""
        return not self.task_adapters

    @property
    def display(self) -> str:
        return self.label or self.name


METHODS: dict[str, RetrainMethod] = {}


def register_method(method: RetrainMethod) -> RetrainMethod:
    """Make ``method`` available to :func:`metanb.retrain.retrain` and every caller."""
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method (tests and notebooks that register toys clean up after themselves)."""
    METHODS.pop(name, None)


def get_method(name: str) -> RetrainMethod:
    if name not in METHODS:
        raise MetanbError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def missing_heads(method: RetrainMethod, task_heads: str | None) -> str | None:
    """The one-line problem when ``method`` needs per-task heads and none are named."""
    if method.task_heads == "required" and not task_heads:
        return (f"method {method.name!r} needs task_heads: the name of the output head to copy "
                "per task (e.g. 'classifier')")
    return None


def method_names() -> list[str]:
    """Every registered method, in registration order (the order of tables and legends)."""
    return list(METHODS)


def joint_step(ctx: StepContext, task_ids: Sequence[int]) -> torch.Tensor:
    """SR and LoRA-ML: one update on the mixed batch of this step's tasks."""
    return ctx.update(task_ids)


def scheduled_lr(config: RetrainConfig) -> float:
    """The peak lr of the loop's scheduled optimiser: Reptile's outer AdamW's (outer_lr) when
    it has one, else the run's lr."""
    adamw = config.method == "reptile" and config.outer_optimizer == "adamw"
    return config.outer_lr if adamw else config.lr


def reptile_step(ctx: StepContext, task_ids: Sequence[int]) -> torch.Tensor:
    """Reptile (batched, first order): from θ, run ``inner_steps`` updates on each task alone
    to reach φ_t, then move θ towards the tasks' solutions (the correct sign).

    ``outer_optimizer`` interpolate: θ <- θ + meta_step · mean_t (φ_t - θ); the inner updates
    share the loop's AdamW, whose moments persist across tasks. adamw (the official
    convai/reptile.py): the inner updates use a fresh AdamW per task at a constant ``lr``; the
    loop's AdamW (at ``outer_lr``, scheduled) takes one step on the gradient Σ_t (θ - φ_t) / T
    (T the number of retraining tasks, as reptile.py divides), which descends towards the φ_t.
    """
    config = ctx.config
    adamw = config.outer_optimizer == "adamw"
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    pull = [torch.zeros_like(p) for p in params]
    losses = []
    for task in task_ids:
        inner = make_optimizer(ctx.model, config.lr, config.weight_decay) if adamw else None
        for _ in range(config.inner_steps):
            losses.append(ctx.update([task], inner))
        with torch.no_grad():
            for p, s, d in zip(params, start, pull, strict=True):
                d.add_(p - s)
                p.copy_(s)
    if adamw:
        num_tasks = len(ctx.streams.streams)
        for p, d in zip(params, pull, strict=True):
            p.grad = d.neg_().div_(num_tasks)
        ctx.optimizer.set_tasks(None)
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            for p, s, d in zip(params, start, pull, strict=True):
                p.copy_(s + config.meta_step / len(task_ids) * d)
    return torch.stack(losses).mean()


register_method(RetrainMethod(
    "standard", "SR: the pooled tasks, all weights, no adapters", joint_step,
    label="SR (standard retraining)", color="#d95f02", turns="blocks"))
register_method(RetrainMethod(
    "lora-ml", "LoRA-ML: base + one LoRA adapter per task, jointly, one forward per mixed batch",
    joint_step, task_adapters=True, task_heads="optional", label="LoRA-ML", color="#1b9e77"))
register_method(RetrainMethod(
    "last-layer-ml", "last-layer-ML: base + one head per task (config.task_heads), jointly",
    joint_step, task_heads="required", label="last-layer-ML", color="#e7298a"))
register_method(RetrainMethod(
    "reptile", "Reptile: inner steps on one task, outer interpolation (first order)",
    reptile_step, label="Reptile", color="#7570b3", turns="tasks"))
