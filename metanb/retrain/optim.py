"""AdamW that leaves absent tasks alone.

All T adapters of a layer are one tensor (T, ...), so a plain AdamW would move the adapter of a
task that had no example in a step: its gradient rows are zero, but the step still applies the
momentum left from earlier steps and the weight decay. In LoRA-ML each task's adapter is moved
only by its own data, so :class:`TaskAdamW` keeps one step count per task row and updates only
the rows of the tasks present in the step: absent rows, and their optimiser state, are left
bit for bit as they were. Every other parameter gets exactly torch's AdamW update (the same
arithmetic, in the same order: bit for bit on the CPU).

Each update runs in torch's multi-tensor form (``torch._foreach_*``, as ``torch.optim.AdamW``
with ``foreach=True``): one call per operation for all the tensors of a group, not one per
tensor, which on small models is most of an optimiser step's cost. The state is torch's
(``step``, ``exp_avg``, ``exp_avg_sq`` per tensor; ``step`` holds one count per task row).
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
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["num_tasks"] is None:
                self._dense(params, group)
            elif self._present is None or len(self._present) == group["num_tasks"]:
                self._all_rows(params, group)
            else:
                for p in params:
                    self._rows(p, group)
        return loss

    def _states(self, params: list[torch.Tensor], step: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Each parameter's (step, exp_avg, exp_avg_sq), created on first use (a copy of
        ``step``, zero moments)."""
        steps, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = step.clone()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            steps.append(state["step"])
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        return steps, exp_avgs, exp_avg_sqs

    def _dense(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        """torch.optim.AdamW's update, as its multi-tensor (foreach) form: the single-tensor
        arithmetic, in the same order, one call per operation for all tensors (bit for bit
        the same on the CPU; one host sync for all step counts instead of one per tensor)."""
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        steps, exp_avgs, exp_avg_sqs = self._states(params, torch.tensor(0.0))
        grads = [p.grad for p in params]
        torch._foreach_add_(steps, 1)
        counts = torch.stack(steps).tolist()
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - beta2**n) ** 0.5 for n in counts])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-(lr / (1 - beta1**n)) for n in counts])

    def _rows(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """The same update on the present rows only, each row with its own step count."""
        beta1, beta2 = group["betas"]
        (steps,), (exp_avgs,), (exp_avg_sqs,) = self._states(
            [p], torch.zeros(group["num_tasks"], dtype=torch.float64))
        rows = self._present
        steps[rows] += 1
        step = steps[rows]
        shape = (-1,) + (1,) * (p.dim() - 1)
        step_size = (group["lr"] / (1 - beta1**step)).to(p.device, p.dtype).view(shape)
        bias2 = (1 - beta2**step).sqrt().to(p.device, p.dtype).view(shape)
        idx = rows.to(p.device)
        grad = p.grad.index_select(0, idx)
        param = p.index_select(0, idx).mul_(1 - group["lr"] * group["weight_decay"])
        exp_avg = exp_avgs.index_select(0, idx).lerp_(grad, 1 - beta1)
        exp_avg_sq = exp_avg_sqs.index_select(0, idx).mul_(beta2).addcmul_(
            grad, grad, value=1 - beta2)
        param.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() / bias2).add_(group["eps"]))
        p.index_copy_(0, idx, param)
        exp_avgs.index_copy_(0, idx, exp_avg)
        exp_avg_sqs.index_copy_(0, idx, exp_avg_sq)

    def _all_rows(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        """Every task present: the arithmetic of :meth:`_rows` on whole tensors, in place,
        without its gathers and scatters, one multi-tensor call per operation (on small
        adapters the per-call overhead is most of the cost)."""
        beta1, beta2 = group["betas"]
        steps, exp_avgs, exp_avg_sqs = self._states(
            params, torch.zeros(group["num_tasks"], dtype=torch.float64))
        grads = [p.grad for p in params]
        torch._foreach_add_(steps, 1)
        step = torch.stack(steps)  # (tensors, T): each row's own count
        step_sizes = _per_row(group["lr"] / (1 - beta1**step), params)
        bias2 = _per_row((1 - beta2**step).sqrt(), params)
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias2)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_mul(step_sizes, exp_avgs)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(params, update)


def _per_row(values: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Row i of ``values`` (one float64 per task) as a (T, 1, ...) tensor that broadcasts
    over ``params[i]``, in its dtype and on its device (one conversion when all agree)."""
    first = params[0]
    if all(p.device == first.device and p.dtype == first.dtype for p in params):
        rows = values.to(first.device, first.dtype).unbind(0)
    else:
        rows = tuple(v.to(p.device, p.dtype) for v, p in zip(values, params, strict=True))
    return [r.view((-1,) + (1,) * (p.dim() - 1)) for r, p in zip(rows, params, strict=True)]


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
