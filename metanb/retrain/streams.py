"""The data side of the loop: one endless, resumable stream of batches per task, and the mixed
batch of one step.

``tasks`` holds one iterable of batches per task; a batch is a dict of tensors that
``model(**batch)`` accepts, labels included. Each step draws one batch from each of its tasks
and concatenates them along dim 0 into one mixed batch with per-example task ids, task by task
(so each task's rows are contiguous). Pass re-iterable, deterministic collections (lists, or
DataLoaders with a seeded generator) for exact resumption.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

import torch

from metanb.errors import MetanbError
from metanb.retrain.config import MAX_DEFAULT_TASKS_PER_STEP, RetrainConfig
from metanb.seeding import derive_seed

Batch = Mapping[str, torch.Tensor]


class TaskStream:
    """Item i is the i-th batch of the iterable re-iterated as often as needed. Sequences are
    indexed directly; other iterables are re-iterated and skipped forward (how a resumed run
    finds its place)."""

    def __init__(self, batches: Iterable[Batch], task: int) -> None:
        self.batches = batches
        self.task = task
        self._iter: Iterator[Batch] | None = None
        self._next = 0  # absolute index of the item self._iter yields next
        self._epoch_start = 0

    def get(self, index: int) -> Batch:
        if isinstance(self.batches, Sequence):
            if len(self.batches) == 0:
                raise MetanbError(f"task {self.task} has no batches")
            return self.batches[index % len(self.batches)]
        if self._iter is None or index < self._next:
            self._iter, self._next, self._epoch_start = iter(self.batches), 0, 0
        while self._next < index:
            self._advance()
        return self._advance()

    def _advance(self) -> Batch:
        assert self._iter is not None
        try:
            item = next(self._iter)
        except StopIteration:
            if self._next == self._epoch_start:
                raise MetanbError(
                    f"task {self.task} yielded no batches (after {self._next} in earlier "
                    "passes); pass a re-iterable collection such as a list or a DataLoader, "
                    "not a one-shot generator") from None
            self._iter, self._epoch_start = iter(self.batches), self._next
            return self._advance()
        self._next += 1
        return item


class TaskStreams:
    """One :class:`TaskStream` per task, with a per-task count of batches consumed.

    Under a data-parallel launch process p of P takes batches p, p + P, p + 2P, ... so the
    processes see different data while staying in lockstep on which tasks a step mixes.
    """

    def __init__(self, tasks: Sequence[Iterable[Batch]], shard: int = 0,
                 num_shards: int = 1) -> None:
        self.streams = [TaskStream(batches, t) for t, batches in enumerate(tasks)]
        self.consumed = [0] * len(self.streams)
        self.shard, self.num_shards = shard, num_shards

    def next(self, task: int) -> Batch:
        index = self.consumed[task] * self.num_shards + self.shard
        self.consumed[task] += 1
        return self.streams[task].get(index)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": list(self.consumed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["consumed"]) != len(self.consumed):
            raise MetanbError(
                f"the checkpoint has {len(state['consumed'])} tasks, this call "
                f"{len(self.consumed)}; resume with the same tasks")
        self.consumed = list(state["consumed"])


def mix_batches(batches: Sequence[Batch], task_ids: Sequence[int]
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Concatenate one batch per task along dim 0; return it with one task id per example."""
    keys = list(batches[0])
    sizes = []
    for batch, task in zip(batches, task_ids, strict=True):
        if set(batch) != set(keys):
            raise MetanbError(
                f"cannot mix batches: task {task_ids[0]} has keys {keys} but task {task} has "
                f"{list(batch)}; every task must produce the same fields")
        bad = [k for k, v in batch.items() if not isinstance(v, torch.Tensor) or v.dim() == 0]
        if bad:
            raise MetanbError(f"batch of task {task}: fields {bad} are not batched tensors")
        lengths = {k: v.shape[0] for k, v in batch.items()}
        if len(set(lengths.values())) != 1:
            raise MetanbError(f"batch of task {task}: fields disagree on batch size {lengths}")
        sizes.append(next(iter(lengths.values())))
    mixed = {}
    for key in keys:
        shapes = {tuple(b[key].shape[1:]) for b in batches}
        if len(shapes) != 1:
            detail = ", ".join(f"task {t}: {tuple(b[key].shape)}"
                               for b, t in zip(batches, task_ids, strict=True))
            raise MetanbError(
                f"cannot mix batches: field {key!r} has different shapes ({detail}); pad every "
                "task to the same length (e.g. the same max_length and number of candidates)")
        mixed[key] = torch.cat([b[key] for b in batches])
    ids = torch.cat([torch.full((n,), t, dtype=torch.long)
                     for n, t in zip(sizes, task_ids, strict=True)])
    return mixed, ids


def turn_order(turns: str, tasks: Sequence[Iterable[Batch]]) -> list[int]:
    """One epoch of task-ordering ``in-turn``: the task of each step, as the official loops take
    them (jacob-block/peft-ml, convai/).

    ``turns`` is the method's (:attr:`metanb.retrain.methods.RetrainMethod.turns`): ``blocks``
    (standard.py: every batch of task 0, then of task 1, ...); ``round-robin`` (lora-ml.py,
    last-layer-ml.py: one batch of each task in turn; a task found out of batches leaves the
    turn and the round restarts at task 0, so each task gives all its batches once); ``tasks``
    (reptile.py: each task once). Tasks without a length count as one batch.
    """
    sizes = [len(t) if turns != "tasks" and isinstance(t, Sized) else 1 for t in tasks]
    if turns == "blocks":
        return [t for t, n in enumerate(sizes) for _ in range(n)]
    order: list[int] = []
    used, live = [0] * len(sizes), [True] * len(sizes)
    while any(live):
        for t, n in enumerate(sizes):
            if not live[t]:
                continue
            if used[t] == n:
                live[t] = False
                break
            used[t] += 1
            order.append(t)
    return order


def schedule_length(config: RetrainConfig, turns: str, tasks: Sequence[Iterable[Batch]]
                    ) -> float:
    """The steps that ``warmup`` and ``schedule_stretch`` multiply: the run's, or (unit
    largest-task, methods that take a step per task batch) the largest task's share of them,
    as the official scripts size the schedule by task 0, their largest (conv_utils.py sorts the
    clusters by size): ``len(loader_0) * epochs``."""
    if config.schedule_unit == "steps" or turns == "tasks":
        return float(config.steps)
    sizes = [len(t) for t in tasks if isinstance(t, Sized)]
    if len(sizes) != len(tasks) or not sum(sizes):
        raise MetanbError("schedule_unit largest-task needs tasks with a length (lists or "
                          "DataLoaders); use schedule_unit steps")
    return config.steps * max(sizes) / sum(sizes)


def step_tasks(config: RetrainConfig, num_tasks: int, step: int,
               order: Sequence[int] | None = None) -> list[int]:
    """The tasks mixed at ``step``: all of them, or, when capped, a fresh seeded subset
    (``task_order`` random) or the next ones of ``order`` (in-turn: one epoch of
    :func:`turn_order`, repeated; 0, 1, ..., T - 1 without one).

    A function of (seed, step) alone, so a resumed run draws exactly what the original would,
    and every process of a data-parallel run draws the same.
    """
    k = min(num_tasks, config.tasks_per_step or MAX_DEFAULT_TASKS_PER_STEP)
    if k == num_tasks:
        return list(range(num_tasks))
    if config.task_order == "in-turn":
        turn = list(order) if order else list(range(num_tasks))
        return sorted({turn[(step * k + i) % len(turn)] for i in range(k)})
    g = torch.Generator().manual_seed(derive_seed(config.seed, "step-tasks", step))
    return sorted(torch.randperm(num_tasks, generator=g)[:k].tolist())
