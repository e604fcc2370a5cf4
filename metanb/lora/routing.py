"""Which rows of a batch go through which task's adapter, and the mixed forward that does it.

How task ids reach the layers, and why this way
-----------------------------------------------
A model adapted by :func:`metanb.lora.add_multi_lora` gets one forward pre-hook on its root
module. At every root forward the hook takes the batch's ids, from a ``task_ids=`` keyword of
the call (popped before the model's own ``forward`` sees it, as PEFT passes ``adapter_names``)
or else from the enclosing ``with use_tasks(model, ids):`` block, and hands one
:class:`TaskRouting` to every adapted layer. A root forward with neither is refused by the
first adapted layer with a one-line error, so nobody trains a mixed model by accident.

The ids then *stay* on the layers until the next root forward. That is what gradient
checkpointing needs: during ``loss.backward()`` a checkpointed block re-runs its forward, after
the ``with`` block has closed and without a root forward, and it must see the ids of the
forward it re-runs. Storing ids only for the span of a ``with`` block (the old design) made that
re-run fail; capturing them in the autograd graph would need each model's checkpointed blocks
to pass them along, which Hugging Face models do not. The price, and the one limit: under
gradient checkpointing, two forwards followed by one backward (of the first) re-run the first
forward's blocks with the *second* forward's ids. Do one backward per forward (as every
training loop does), or turn checkpointing off to accumulate several graphs.

The hook also checks the batch size of the call (``input_ids``, ``inputs_embeds`` or the first
tensor argument) against the number of ids: a layout that is not batch-first, or ids of another
batch, is an error at the door rather than a silent mis-routing deep inside (code review R3).

The mixed forward, with no per-example copy of an adapter
---------------------------------------------------------
A layer sees N rows for b examples, N a multiple of b, the rows of one example consecutive
(batch-first; multiple-choice models flatten (b, m, ...) to (b·m, ...)). The retraining loop
concatenates task batches in order, so the rows of each task are one contiguous run, and then
each task's adapter is applied to its own slice: when the runs have equal length (the loop's
case) the rows are folded to (u, rows of one task, in), a view, and one grouped low-rank product
(:mod:`metanb.lora.lowrank`) applies the u tasks' factors. Those factors are the adapter
tensors themselves when every task is present in order, a slice (a view) when the tasks are
consecutive, and a gather of u adapters otherwise; unequal runs loop over the u runs. Memory
grows with u, not with the batch. Any other order falls back to gathering each example's
adapter (``A[ids]``), which is exact in every case; both paths give the same numbers. Adapters
of tasks absent from a batch are not touched by the forward, so their gradient is exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metanb.errors import MetanbError
from metanb.lora.lowrank import grouped_low_rank


def as_task_ids(task_ids: torch.Tensor | Sequence[int], num_tasks: int) -> torch.Tensor:
    """Validate per-example task ids: a 1-D integer tensor with values in [0, num_tasks)."""
    ids = torch.as_tensor(task_ids)
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise MetanbError(
            f"task_ids must be a 1-D integer tensor (one id per example), got dtype {ids.dtype} "
            f"and shape {tuple(ids.shape)}"
        )
    if ids.numel() == 0:
        raise MetanbError("task_ids is empty; pass one id per example of the batch")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_tasks:
        raise MetanbError(
            f"task id {low if low < 0 else high} is out of range: this model has {num_tasks} "
            f"task adapters, ids must be in 0..{num_tasks - 1}"
        )
    return ids.long()


@dataclass(frozen=True)
class TaskRouting:
    """The ids of one batch and, when each task's examples are contiguous, their runs.

    Built once per root forward and shared by every adapted layer, so the one host read of the
    ids (to find the runs) is paid once per forward, not once per layer.
    """

    ids: torch.Tensor  # (b,) long, on the model's device
    runs: tuple[tuple[int, int, int], ...] | None  # (task, first, end); None: not contiguous
    run_tasks: torch.Tensor | None  # (u,) the runs' tasks on the device, for the batched matmul
    span: tuple[int, int] | None = None  # (first, end): the runs' tasks are first, ..., end - 1
    equal_runs: bool = False  # every task has the same number of examples (one grouped product)

    @classmethod
    def build(cls, task_ids: torch.Tensor | Sequence[int], num_tasks: int,
              device: torch.device | None = None) -> TaskRouting:
        ids = as_task_ids(task_ids, num_tasks)
        # runs of equal consecutive ids, in one call (a Python loop over ids costs ms per step)
        tasks, counts = torch.unique_consecutive(ids.cpu(), return_counts=True)
        ends = counts.cumsum(0).tolist()
        starts = [0] + ends[:-1]
        runs = list(zip(tasks.tolist(), starts, ends, strict=True))
        contiguous = len(runs) == len({task for task, _, _ in runs})
        ids = ids.to(device) if device is not None else ids
        if not contiguous:
            return cls(ids, None, None)
        order = [task for task, _, _ in runs]
        span = (order[0], order[0] + len(order)) if order == list(
            range(order[0], order[0] + len(order))) else None
        equal = len({end - first for _, first, end in runs}) == 1
        return cls(ids, tuple(runs), torch.tensor(order, device=ids.device), span, equal)

    @property
    def size(self) -> int:
        """b, the number of examples (one id each)."""
        return self.ids.shape[0]

    def groups(self, A: torch.Tensor, B: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The factors (g, r, in) and (g, out, r) of the g groups the rows fold into, or None
        when they do not fold (contiguous runs of unequal length).

        Equal runs: one group per run, the factors A and B themselves when every task is
        present in order, a view when the tasks are consecutive, a gather of u adapters
        otherwise. Any other order: one group per example (a gather of b adapters).
        """
        if self.runs is None:
            ids = self.ids.to(A.device)
            return A[ids], B[ids]
        if not self.equal_runs:
            return None
        if self.span is not None:
            first, end = self.span
            if first == 0 and end == A.shape[0]:
                return A, B
            return A[first:end], B[first:end]
        assert self.run_tasks is not None
        tasks = self.run_tasks.to(A.device)
        return A.index_select(0, tasks), B.index_select(0, tasks)


def mixed_update(h: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 routing: TaskRouting, scaling: float = 1.0) -> torch.Tensor:
    """Row-wise ``scaling * B_t A_t h`` for ``h`` of shape (b, rows, in), row block i of task
    ``ids[i]``.

    ``A`` (T, r, in) and ``B`` (T, out, r) hold every task's factors; returns (b, rows, out).
    """
    groups = routing.groups(A, B)
    if groups is not None:
        A_, B_ = groups
        folded = h.reshape(A_.shape[0], -1, h.shape[-1])
        return grouped_low_rank(folded, A_, B_, scaling).reshape(*h.shape[:-1], B.shape[1])
    assert routing.runs is not None  # unequal runs: one product per run
    return torch.cat([
        grouped_low_rank(h[first:end].reshape(1, -1, h.shape[-1]), A[task:task + 1],
                         B[task:task + 1], scaling).reshape(end - first, *h.shape[1:-1], -1)
        for task, first, end in routing.runs])
