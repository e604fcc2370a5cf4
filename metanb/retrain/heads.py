"""Per-task heads: T copies of a model's output head, one chosen per example.

The paper's LoRA-ML and last-layer-ML retrain the base with one head per task (the head, like
the adapters, absorbs what is task-specific and is thrown away afterwards): a new task is then
fitted with a *fresh* head. :func:`add_task_heads` swaps the module at ``name`` (e.g. a
classifier) for :class:`TaskHeads`, which holds T deep copies and routes each example to its
task's copy; :func:`remove_task_heads` puts a head back: the original, untouched one, so
nothing of the retraining tasks' heads leaks into the base.

Routing: the loop sets the ids on every :class:`TaskHeads` for the forward and backward of a
step (:func:`use_task_heads`, beside :func:`metanb.lora.use_tasks` for the adapters). A head sits
after the encoder, outside the blocks gradient checkpointing re-runs, so block scoping is
enough. A head sees N rows for b examples exactly as an adapted layer does: N = b ·
rows-per-example, example-major (multiple-choice and cross-encoder heads see b · m rows).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora.model import replace_module
from metanb.seeding import derive_seed


class TaskHeads(nn.Module):
    """T copies of one head; example i of a batch goes through head ``task_ids[i]``."""

    def __init__(self, head: nn.Module, num_tasks: int, name: str = "",
                 fresh_seed: int | None = None) -> None:
        super().__init__()
        if num_tasks < 1:
            raise MetanbError(f"num_tasks must be at least 1, got {num_tasks}")
        self.name, self.num_tasks = name, num_tasks
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in range(num_tasks))
        if fresh_seed is not None:
            for task, copied in enumerate(self.heads):
                reinitialise(copied, derive_seed(fresh_seed, "task-head", task))
        self.original = [head]  # kept out of the module tree: not trained, not saved
        self.task_ids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        ids = self.task_ids
        if ids is None:
            raise MetanbError(f"head {self.name!r} has {self.num_tasks} task heads but no task "
                              "ids; run the model inside `with use_tasks(model, task_ids):`")
        n, b = x.shape[0], ids.shape[0]
        if n % b != 0:
            raise MetanbError(f"head {self.name!r} got a leading dimension of {n}, not a "
                              f"multiple of the {b} task ids; pass one id per example")
        rows = ids.to(x.device).repeat_interleave(n // b)
        out: torch.Tensor | None = None
        for task in torch.unique(rows).tolist():
            mask = rows == task
            y = self.heads[task](x[mask], *args, **kwargs)
            if out is None:
                out = y.new_zeros((n, *y.shape[1:]))
            out[mask] = y
        assert out is not None
        return out


def reinitialise(module: nn.Module, seed: int) -> None:
    """Every submodule's own ``reset_parameters`` (PyTorch's default initialisation, what a
    head built anew gets), seeded; the caller's global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def add_task_heads(model: nn.Module, name: str, num_tasks: int,
                   fresh_seed: int | None = None) -> TaskHeads:
    """Replace module ``name`` of ``model`` by T trainable copies of it, in place; with
    ``fresh_seed`` each copy is re-initialised (seeded per task), as the official
    MultiHeadClassifier builds T new heads instead of copying the pretrained one."""
    try:
        head = model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise MetanbError(f"the model has no module {name!r} to use as its head; its top-level "
                          f"modules are {children}") from None
    heads = TaskHeads(head, num_tasks, name, fresh_seed)
    replace_module(model, name, heads)
    return heads


def remove_task_heads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Put every original head back; return the retrained heads' weights (on the CPU)."""
    state: dict[str, torch.Tensor] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, TaskHeads):
            for key, value in module.state_dict().items():
                state[f"{name}.{key}"] = value.detach().to("cpu").clone()
            replace_module(model, name, module.original[0].to(next(module.parameters()).device))
    return state


def task_heads(model: nn.Module) -> dict[str, TaskHeads]:
    return {n: m for n, m in model.named_modules() if isinstance(m, TaskHeads)}


@contextmanager
def use_task_heads(model: nn.Module, ids: torch.Tensor) -> Iterator[None]:
    """Route the examples of the forward(s) in the block to their tasks' heads."""
    heads = list(task_heads(model).values())
    previous = [h.task_ids for h in heads]
    for h in heads:
        h.task_ids = ids
    try:
        yield
    finally:
        for h, old in zip(heads, previous, strict=True):
            h.task_ids = old

