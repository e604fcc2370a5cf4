"""One retraining loop for every method: SR, LoRA-ML, Reptile, and whatever registers next.

A method is two things (:class:`RetrainMethod`): which parameters exist and train (does it
attach one adapter per task?) and how one optimisation step is taken (one update on a mixed
batch, or Reptile's inner loop and interpolation). Everything else is shared and lives here
once: AdamW with linear warmup/decay, gradient accumulation, clipping, seeding, device
placement and mixed precision through ``accelerate`` (CPU, one GPU, or ``accelerate launch``
over several), a tqdm bar, a history, and atomic checkpoints that resume a killed run exactly.

Data. ``tasks`` holds one iterable of batches per task; a batch is a dict of tensors that
``model(**batch)`` accepts, labels included, returning an object with ``.loss``. Each step
draws one batch from each of ``tasks_per_step`` tasks and concatenates them along dim 0 into
one mixed batch with per-example task ids. Each task's batches are walked in order and
re-iterated when exhausted, so pass re-iterable, deterministic collections (lists, or
DataLoaders with a seeded generator) if you want exact resumption.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from metanb.errors import MetanbError
from metanb.lora import (
    MultiLoraConfig,
    add_multi_lora,
    get_multi_lora_config,
    multi_lora_layers,
    remove_multi_lora,
    use_tasks,
)
from metanb.seeding import seed_everything

# "all tasks per step, capped": a mixed batch of 8 task batches is already 8x a task batch
MAX_DEFAULT_TASKS_PER_STEP = 8
MIXED_PRECISION = ("no", "fp16", "bf16")
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class RetrainConfig:
    """Everything that defines a retraining run (and must match to resume from a checkpoint)."""

    method: str = "lora-ml"
    rank: int = 8
    steps: int = 200
    lr: float = 1e-4
    target_modules: str | tuple[str, ...] = ("query", "value")
    seed: int = 0
    tasks_per_step: int | None = None
    grad_accum: int = 1
    mixed_precision: str = "no"
    alpha: float | None = None  # adapter scaling alpha / rank; None means 2 * rank (PEFT habit)
    dropout: float = 0.0  # adapter dropout
    symmetric: bool = False  # U Uᵀ adapters (square layers), as in the linear theory
    train_base: bool = True  # False: adapters only (not LoRA-ML; useful as an ablation)
    warmup: float = 0.1  # fraction of steps of linear warmup, then linear decay to 0
    weight_decay: float = 0.0  # AdamW's; 0 so that nothing biases the base away from A*
    max_grad_norm: float | None = 1.0
    inner_steps: int = 4  # reptile: inner optimiser steps on one task
    meta_step: float = 1.0  # reptile: outer interpolation θ <- θ + meta_step · mean_t(φ_t - θ)
    device: str | None = None  # None: accelerate's choice (GPU if any); "cpu"; "cuda" (required)

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, Sequence) and not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        get_method(self.method)
        checks = [
            (self.rank >= 1, f"rank must be at least 1, got {self.rank}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}"),
            (self.tasks_per_step is None or self.tasks_per_step >= 1,
             f"tasks_per_step must be at least 1, got {self.tasks_per_step}"),
            (self.mixed_precision in MIXED_PRECISION,
             f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"),
            (0.0 <= self.warmup < 1.0, f"warmup is a fraction of steps in [0, 1), got "
             f"{self.warmup}"),
            (self.inner_steps >= 1, f"inner_steps must be at least 1, got {self.inner_steps}"),
            (self.meta_step > 0, f"meta_step must be positive, got {self.meta_step}"),
            (self.device in (None, "cpu", "cuda"), f"device must be None, 'cpu' or 'cuda', got "
             f"{self.device!r} (choose GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)"),
        ]
        for ok, message in checks:
            if not ok:
                raise MetanbError(message)

    @classmethod
    def from_options(cls, **options: Any) -> RetrainConfig:
        """A config from keyword options; an unknown name is a clear error, not a TypeError."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise MetanbError(
                f"unknown retraining options {unknown}; valid ones: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**options)

    def lora_config(self, num_tasks: int) -> MultiLoraConfig:
        """The adapters a method with per-task adapters attaches."""
        return MultiLoraConfig(
            num_tasks=num_tasks, rank=self.rank,
            alpha=self.alpha if self.alpha is not None else 2.0 * self.rank,
            dropout=self.dropout, target_modules=self.target_modules,
            symmetric=self.symmetric, train_base=self.train_base,
        )


@dataclass
class RetrainResult:
    """The retrained base (adapters removed, same class as the input) and the run's record."""

    model: nn.Module
    history: list[dict[str, Any]]
    config: RetrainConfig
    lora_config: MultiLoraConfig | None = None  # the adapters the run trained (lora-ml)
    adapter_state: dict[str, torch.Tensor] | None = None  # their final weights, on the CPU
    resumed_from: int | None = None  # the checkpoint's step, if this call resumed

    def with_adapters(self) -> nn.Module:
        """A copy of the retrained base with the run's task adapters re-attached."""
        if self.lora_config is None or self.adapter_state is None:
            raise MetanbError(f"method {self.config.method!r} trains no task adapters")
        model = add_multi_lora(copy.deepcopy(self.model), self.lora_config)
        unexpected = model.load_state_dict(self.adapter_state, strict=False).unexpected_keys
        if unexpected:
            raise MetanbError(f"adapter weights do not fit the model: {unexpected[:3]}")
        return model


# ----------------------------------------------------------------------------- data


class TaskStream:
    """An endless, resumable walk over one task's batches: item i is the i-th batch of the
    iterable re-iterated as often as needed. Sequences are indexed directly; other iterables
    are re-iterated and skipped forward (which is how a resumed run finds its place)."""

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]], task: int) -> None:
        self.batches = batches
        self.task = task
        self._iter: Iterator[Mapping[str, torch.Tensor]] | None = None
        self._next = 0  # absolute index of the item self._iter yields next
        self._epoch_start = 0

    def get(self, index: int) -> Mapping[str, torch.Tensor]:
        if isinstance(self.batches, Sequence):
            if len(self.batches) == 0:
                raise MetanbError(f"task {self.task} has no batches")
            return self.batches[index % len(self.batches)]
        if self._iter is None or index < self._next:
            self._iter, self._next, self._epoch_start = iter(self.batches), 0, 0
        while self._next < index:
            self._advance()
        return self._advance()

    def _advance(self) -> Mapping[str, torch.Tensor]:
        assert self._iter is not None
        try:
            item = next(self._iter)
        except StopIteration:
            if self._next == self._epoch_start:
                raise MetanbError(
                    f"task {self.task} yielded no batches (after {self._next} in earlier "
                    "passes); pass a re-iterable collection such as a list or a DataLoader, "
                    "not a one-shot generator"
                ) from None
            self._iter, self._epoch_start = iter(self.batches), self._next
            return self._advance()
        self._next += 1
        return item


class TaskStreams:
    """One :class:`TaskStream` per task, with a per-task count of batches consumed.

    Under ``accelerate launch`` process p of P takes batches p, p + P, p + 2P, ... so the
    processes see different data while staying in lockstep on which tasks a step mixes.
    """

    def __init__(self, tasks: Sequence[Iterable[Mapping[str, torch.Tensor]]],
                 shard: int = 0, num_shards: int = 1) -> None:
        self.streams = [TaskStream(batches, t) for t, batches in enumerate(tasks)]
        self.consumed = [0] * len(self.streams)
        self.shard, self.num_shards = shard, num_shards

    def next(self, task: int) -> Mapping[str, torch.Tensor]:
        index = self.consumed[task] * self.num_shards + self.shard
        self.consumed[task] += 1
        return self.streams[task].get(index)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": list(self.consumed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["consumed"]) != len(self.consumed):
            raise MetanbError(
                f"the checkpoint has {len(state['consumed'])} tasks, this call "
                f"{len(self.consumed)}; resume with the same tasks"
            )
        self.consumed = list(state["consumed"])


def mix_batches(
    batches: Sequence[Mapping[str, torch.Tensor]], task_ids: Sequence[int]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Concatenate one batch per task along dim 0; return it with one task id per example."""
    keys = list(batches[0])
    sizes = []
    for batch, task in zip(batches, task_ids, strict=True):
        if set(batch) != set(keys):
            raise MetanbError(
                f"cannot mix batches: task {task_ids[0]} has keys {keys} but task {task} has "
                f"{list(batch)}; every task must produce the same fields"
            )
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
                "task to the same length (e.g. the same max_length and number of candidates)"
            )
        mixed[key] = torch.cat([b[key] for b in batches])
    ids = torch.cat([torch.full((n,), t, dtype=torch.long)
                     for n, t in zip(sizes, task_ids, strict=True)])
    return mixed, ids


# ----------------------------------------------------------------------------- methods


@dataclass
class StepContext:
    """What a method's step function may use: the prepared model, optimiser, data, config."""

    model: nn.Module
    optimizer: Any
    accelerator: Any
    streams: TaskStreams
    config: RetrainConfig
    has_adapters: bool
    examples: int = 0  # examples processed in the current step (this process)

    def update(self, task_ids: Sequence[int]) -> torch.Tensor:
        """One optimiser update on mixed batches of ``task_ids`` (``grad_accum`` micro-batches).

        Returns the mean micro-batch loss (detached). With adapters, each example of the mixed
        batch goes through its own task's adapter (one forward, one backward).
        """
        acc, model, losses = self.accelerator, self.model, []
        for _ in range(self.config.grad_accum):
            batch, ids = mix_batches([self.streams.next(t) for t in task_ids], task_ids)
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            self.examples += len(ids)
            with acc.accumulate(model):
                with use_tasks(model, ids) if self.has_adapters else nullcontext():
                    loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients and self.config.max_grad_norm is not None:
                    acc.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float())
        return torch.stack(losses).mean()


StepFn = Callable[[StepContext, Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class RetrainMethod:
    """A retraining method: whether it attaches per-task adapters, and how a step is taken."""

    name: str
    description: str
    step: StepFn
    task_adapters: bool = False


METHODS: dict[str, RetrainMethod] = {}


def register_method(method: RetrainMethod) -> RetrainMethod:
    """Make ``method`` available to :func:`retrain` under ``method.name``."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> RetrainMethod:
    if name not in METHODS:
        raise MetanbError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def joint_step(ctx: StepContext, task_ids: Sequence[int]) -> torch.Tensor:
    """SR and LoRA-ML: one update on the mixed batch of this step's tasks."""
    return ctx.update(task_ids)


def reptile_step(ctx: StepContext, task_ids: Sequence[int]) -> torch.Tensor:
    """Reptile (batched, first order): from θ, run ``inner_steps`` updates on each task alone
    to reach φ_t, then move θ <- θ + meta_step · mean_t (φ_t - θ). The inner updates use the
    shared AdamW (its moments persist, as in the reference implementation)."""
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    pull = [torch.zeros_like(p) for p in params]
    losses = []
    for task in task_ids:
        for _ in range(ctx.config.inner_steps):
            losses.append(ctx.update([task]))
        with torch.no_grad():
            for p, s, d in zip(params, start, pull, strict=True):
                d.add_(p - s)
                p.copy_(s)
    with torch.no_grad():
        for p, s, d in zip(params, start, pull, strict=True):
            p.copy_(s + ctx.config.meta_step / len(task_ids) * d)
    return torch.stack(losses).mean()


register_method(RetrainMethod(
    "standard", "SR: the pooled tasks, all weights, no adapters", joint_step))
register_method(RetrainMethod(
    "lora-ml", "LoRA-ML: base + one LoRA adapter per task, jointly, one forward per mixed batch",
    joint_step, task_adapters=True))
register_method(RetrainMethod(
    "reptile", "Reptile: inner steps on one task, outer interpolation (first order)",
    reptile_step))


# ----------------------------------------------------------------------------- the loop


def linear_warmup_decay(steps: int, warmup: float) -> Callable[[int], float]:
    """lr factor: 0 -> 1 linearly over ``warmup * steps`` steps, then linearly down to 0."""
    warm = math.ceil(warmup * steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (steps - step) / max(1, steps - warm))

    return factor


def make_accelerator(config: RetrainConfig) -> Any:
    """An ``accelerate.Accelerator`` for this run's precision, accumulation and device.

    accelerate keeps one process-wide state; outside a distributed launch it is reset when a
    previous run in this process asked for another precision or device, so notebooks and
    benchmarks can mix runs (under ``accelerate launch`` the launcher's settings rule).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if config.device == "cuda" and not torch.cuda.is_available():
        raise MetanbError("device='cuda' but torch sees no GPU; use device=None or 'cpu'")
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if AcceleratorState._shared_state and not distributed:
        state = AcceleratorState()
        if (state.mixed_precision != config.mixed_precision
                or (state.device.type == "cpu") != (config.device == "cpu")):
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=config.mixed_precision,
                       gradient_accumulation_steps=config.grad_accum,
                       cpu=config.device == "cpu")


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """Lists back to the nested tuples ``random.setstate`` wants."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass
class _Checkpoint:
    """Atomic save / exact restore of everything a run needs to continue."""

    path: Path
    every: int

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a kill leaves either the old or the new file, never half

    def load(self, config: RetrainConfig, num_tasks: int) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        saved = state.get("config", {})
        ours = asdict(config)
        diff = {k: (saved.get(k), v) for k, v in ours.items() if _plain(saved.get(k)) != _plain(v)}
        if state.get("format") != CHECKPOINT_FORMAT or diff or state["num_tasks"] != num_tasks:
            what = ", ".join(f"{k}: {a!r} there vs {b!r} here" for k, (a, b) in diff.items())
            raise MetanbError(
                f"checkpoint {self.path} belongs to another run ({what or 'tasks or format'}); "
                "delete it or pass another checkpoint path"
            )
        return state


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def retrain(
    model: nn.Module,
    tasks: Sequence[Iterable[Mapping[str, torch.Tensor]]],
    *,
    method: str = "lora-ml",
    rank: int = 8,
    steps: int = 200,
    lr: float = 1e-4,
    target_modules: str | Sequence[str] = ("query", "value"),
    seed: int = 0,
    tasks_per_step: int | None = None,
    grad_accum: int = 1,
    mixed_precision: str = "no",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    **options: Any,
) -> RetrainResult:
    """Retrain ``model`` on ``tasks`` with ``method``; ``model`` itself is not modified.

    ``options`` are the remaining :class:`RetrainConfig` fields (alpha, dropout, symmetric,
    train_base, warmup, weight_decay, max_grad_norm, inner_steps, meta_step, device).
    With ``checkpoint``, the full state is saved atomically every ``checkpoint_every`` steps and
    at the end; if the file exists, the run resumes from it exactly (same config required).
    The returned model lives on the device it was trained on.
    """
    config = RetrainConfig.from_options(
        method=method, rank=rank, steps=steps, lr=lr, target_modules=target_modules, seed=seed,
        tasks_per_step=tasks_per_step, grad_accum=grad_accum, mixed_precision=mixed_precision,
        **options,
    )
    if checkpoint is not None and checkpoint_every < 1:
        raise MetanbError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    saver = _Checkpoint(Path(checkpoint), checkpoint_every) if checkpoint is not None else None
    return run_retraining(copy.deepcopy(model), list(tasks), config, saver, progress)


def step_tasks(config: RetrainConfig, num_tasks: int, step: int) -> list[int]:
    """The tasks mixed at ``step``: all of them, or a fresh seeded subset when capped.

    A function of (seed, step) alone, so a resumed run draws exactly what the original would.
    """
    k = min(num_tasks, config.tasks_per_step or MAX_DEFAULT_TASKS_PER_STEP)
    if k == num_tasks:
        return list(range(num_tasks))
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return sorted(torch.randperm(num_tasks, generator=g)[:k].tolist())


def run_retraining(
    model: nn.Module,
    tasks: list[Iterable[Mapping[str, torch.Tensor]]],
    config: RetrainConfig,
    saver: _Checkpoint | None = None,
    progress: bool = True,
) -> RetrainResult:
    """The loop itself, on ``model`` in place (``retrain`` hands it a copy)."""
    if not tasks:
        raise MetanbError("tasks is empty; pass one iterable of batches per task")
    method = get_method(config.method)
    was_training = model.training
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    if method.task_adapters:
        add_multi_lora(model, config.lora_config(len(tasks)))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MetanbError("the model has no trainable parameters (all requires_grad=False)")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(config.steps, config.warmup))
    own_forward = "forward" in vars(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    bare = accelerator.unwrap_model(model)
    streams = TaskStreams(tasks, accelerator.process_index, accelerator.num_processes)
    history: list[dict[str, Any]] = []
    start = 0
    state = saver.load(config, len(tasks)) if saver is not None else None
    if state is not None:
        bare.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        streams.load_state_dict(state["streams"])
        history, start = list(state["history"]), int(state["step"])
        _set_rng_state(state["rng"])

    ctx = StepContext(model, optimizer, accelerator, streams, config, method.task_adapters)
    model.train()
    began, cpu_began = time.perf_counter(), time.process_time()
    # at most one refresh a second: in a notebook every refresh is a few kernel messages, and a
    # flood of them overflows the output channel (Jupyter drops messages past its high-water mark)
    bar = tqdm(total=config.steps, initial=start, desc=config.method, mininterval=1.0,
               disable=not progress or not accelerator.is_main_process)
    for step in range(start, config.steps):
        ids = step_tasks(config, len(tasks), step)
        lr = scheduler.get_last_lr()[0]
        ctx.examples = 0
        loss = accelerator.reduce(method.step(ctx, ids), reduction="mean").item()
        scheduler.step()
        history.append({"step": step + 1, "loss": loss, "lr": lr, "tasks": ids,
                        "examples": ctx.examples,  # this step's, on this process
                        # since this call began: wall clock, and this process's CPU time
                        "seconds": time.perf_counter() - began,
                        "cpu_seconds": time.process_time() - cpu_began})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if saver is not None and (done % saver.every == 0 or done == config.steps):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                saver.save({
                    "format": CHECKPOINT_FORMAT, "config": asdict(config),
                    "num_tasks": len(tasks), "step": done, "model": bare.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                    "streams": streams.state_dict(), "history": history, "rng": _rng_state(),
                })
    bar.close()

    model = accelerator.unwrap_model(model)
    if not own_forward:  # drop accelerate's autocast wrapper: back to the class's forward
        for attr in ("forward", "_original_forward"):
            vars(model).pop(attr, None)
    lora_config = adapter_state = None
    if multi_lora_layers(model):
        lora_config = get_multi_lora_config(model)
        adapter_state = {k: v.detach().to("cpu").clone()
                         for k, v in model.state_dict().items() if ".lora_" in k}
        remove_multi_lora(model)
    model.train(was_training)
    return RetrainResult(model, history, config, lora_config, adapter_state,
                         resumed_from=start if state is not None else None)
