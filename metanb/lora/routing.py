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
each task's adapter is applied to its own slice: one matmul pair for a single task, one pair of
batched matmuls against the factors of the batch's u distinct tasks when the runs have equal
length, a loop over the u runs otherwise. Memory grows with u, not with the batch. Any other
order falls back to gathering each example's adapter (``A[ids]``), which is exact in every
case; both paths give the same numbers. Adapters of tasks absent from a batch are not touched
by the forward, so their gradient is exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metanb.errors import MetanbError


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
        run_tasks = torch.tensor([t for t, _, _ in runs], device=ids.device)
        return cls(ids, tuple(runs), run_tasks)

    @property
    def size(self) -> int:
        """b, the number of examples (one id each)."""
        return self.ids.shape[0]

    @property
    def equal_runs(self) -> bool:
        """Every task has the same number of examples (one batched matmul applies them all)."""
        return self.runs is not None and len({end - first for _, first, end in self.runs}) == 1


def mixed_update(h: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 routing: TaskRouting) -> torch.Tensor:
    """Row-wise ``B_t A_t h`` for ``h`` of shape (b, rows, in), row block i of task ``ids[i]``.

    ``A`` (T, r, in) and ``B`` (T, out, r) hold every task's factors; returns (b, rows, out).
    """
    runs = routing.runs
    if runs is None:  # any order: one adapter copy per example
        ids = routing.ids.to(A.device)
        A_, B_ = A[ids], B[ids]  # (b, r, in), (b, out, r)
        return torch.bmm(torch.bmm(h, A_.transpose(1, 2)), B_.transpose(1, 2))
    if len(runs) == 1:
        task = runs[0][0]
        return (h @ A[task].T) @ B[task].T
    if routing.equal_runs:  # (u, rows of one task, in) against the u tasks' factors
        assert routing.run_tasks is not None
        tasks = routing.run_tasks.to(A.device)
        folded = h.reshape(len(runs), -1, h.shape[-1])
        delta = torch.bmm(torch.bmm(folded, A[tasks].transpose(1, 2)), B[tasks].transpose(1, 2))
        return delta.reshape(*h.shape[:-1], B.shape[1])
    return torch.cat([(h[first:end] @ A[task].T) @ B[task].T for task, first, end in runs])
