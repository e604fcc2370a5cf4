"""AdamW that leaves absent tasks alone.

All T adapters of a layer are one tensor (T, ...), so a plain AdamW would move the adapter of a
task that had no example in a step: its gradient rows are zero, but the step still applies the
momentum left from earlier steps and the weight decay. In LoRA-ML each task's adapter is moved
only by its own data, so :class:`TaskAdamW` keeps one step count per task row and updates only
the rows of the tasks present in the step: absent rows, and their optimiser state, are left
bit for bit as they were. Every other parameter gets exactly torch's AdamW update (the same
single-tensor arithmetic, in the same order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn


class TaskAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) with row-sparse updates for task-stacked parameters.

    Parameter groups with ``num_tasks=T`` hold tensors whose dim 0 indexes the task; call
    :meth:`set_tasks` before :meth:`step` to say which tasks the step saw (``None``: all).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, num_tasks=None)
        super().__init__(params, defaults)
        self._present: torch.Tensor | None = None

    def set_tasks(self, task_ids: Sequence[int] | None) -> None:
        """The tasks of the next step (their rows update; the others keep their values)."""
        self._present = None if task_ids is None else torch.tensor(sorted(set(task_ids)))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["num_tasks"] is None:
                    self._dense(p, group)
                else:
                    self._rows(p, group)
        return loss

    def _dense(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """torch.optim.AdamW's single-tensor update."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
        p.mul_(1 - group["lr"] * group["weight_decay"])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def _rows(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """The same update on the present rows only, each row with its own step count."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(group["num_tasks"], dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self._present is None or len(self._present) == p.shape[0]:
            self._all_rows(p, group, state)
            return
        rows = self._present
        state["step"][rows] += 1
        step = state["step"][rows]
        shape = (-1,) + (1,) * (p.dim() - 1)
        step_size = (group["lr"] / (1 - beta1**step)).to(p.device, p.dtype).view(shape)
        bias2 = (1 - beta2**step).sqrt().to(p.device, p.dtype).view(shape)
        idx = rows.to(p.device)
        grad = p.grad.index_select(0, idx)
        param = p.index_select(0, idx).mul_(1 - group["lr"] * group["weight_decay"])
        exp_avg = state["exp_avg"].index_select(0, idx).lerp_(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, idx).mul_(beta2).addcmul_(
            grad, grad, value=1 - beta2)
        param.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() / bias2).add_(group["eps"]))
        p.index_copy_(0, idx, param)
        state["exp_avg"].index_copy_(0, idx, exp_avg)
        state["exp_avg_sq"].index_copy_(0, idx, exp_avg_sq)

    @staticmethod
    def _all_rows(p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """Every task present: the same arithmetic as :meth:`_rows`, in place, without its
        gathers and scatters (they cost more than the update on small adapters)."""
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"]
        shape = (-1,) + (1,) * (p.dim() - 1)
        step_size = (group["lr"] / (1 - beta1**step)).to(p.device, p.dtype).view(shape)
        bias2 = (1 - beta2**step).sqrt().to(p.device, p.dtype).view(shape)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        exp_avg = state["exp_avg"].lerp_(p.grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        p.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() / bias2).add_(group["eps"]))


def task_stacked_parameters(model: nn.Module) -> tuple[list[nn.Parameter], int | None]:
    """The adapter tensors of ``model`` whose dim 0 is the task, and T (None if none)."""
    from metanb.lora import multi_lora_layers

    params: list[nn.Parameter] = []
    num_tasks = None
    for layer in multi_lora_layers(model).values():
        for name, p in layer.named_parameters(recurse=False):
            if name.startswith("lora_") and p.dim() >= 1 and p.shape[0] == layer.num_tasks:
                params.append(p)
                num_tasks = layer.num_tasks
    return params, num_tasks


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> TaskAdamW:
    """TaskAdamW over the trainable parameters: task adapters in their own group."""
    stacked, num_tasks = task_stacked_parameters(model)
    stacked_ids = {id(p) for p in stacked}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in stacked_ids]
    rows = [p for p in stacked if p.requires_grad]
    groups: list[dict[str, Any]] = []
    if dense:
        groups.append({"params": dense})
    if rows:
        groups.append({"params": rows, "num_tasks": num_tasks})
    return TaskAdamW(groups, lr=lr, weight_decay=weight_decay)
