"""The loop: one for every method.

Shared here once: the TaskAdamW optimiser (absent tasks stay put) with linear warmup/decay,
gradient accumulation, clipping, per-step seeding, device placement, mixed precision (torch
autocast), data parallelism through ``accelerate``'s public API (``prepare_model``,
``no_sync``, ``reduce``, ``wait_for_everyone``), a tqdm bar, a history, and atomic
checkpoints written by the main process that resume a killed run exactly.

Randomness. The initialisation (the adapters' A) comes from ``seed`` and is the same on every
process; dropout and any other torch randomness inside step s comes from (seed, process, s),
so data-parallel processes draw different dropout masks, and a resumed run draws exactly what
the uninterrupted one would. The caller's global torch RNG is left as it was.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from metanb.errors import MetanbError
from metanb.lora import (
    add_multi_lora,
    get_multi_lora_config,
    multi_lora_layers,
    remove_multi_lora,
    use_tasks,
)
from metanb.retrain.checkpoint import Checkpoint
from metanb.retrain.config import RetrainConfig
from metanb.retrain.heads import add_task_heads, remove_task_heads, task_heads, use_task_heads
from metanb.retrain.methods import RetrainMethod, get_method, missing_heads, scheduled_lr
from metanb.retrain.optim import TaskAdamW, make_optimizer
from metanb.retrain.precision import Precision
from metanb.retrain.streams import (
    Batch,
    TaskStreams,
    mix_batches,
    schedule_length,
    step_tasks,
    turn_order,
)
from metanb.seeding import derive_seed

if TYPE_CHECKING:
    from accelerate import Accelerator, PartialState


@dataclass
class RetrainResult:
    """The retrained base (adapters removed, same class as the input) and the run's record."""

    model: nn.Module
    history: list[dict[str, Any]]
    config: RetrainConfig
    lora_config: Any = None  # the MultiLoraConfig of the adapters the run trained (lora-ml)
    adapter_state: dict[str, torch.Tensor] | None = None  # their final weights, on the CPU
    resumed_from: int | None = None  # the checkpoint's step, if this call resumed
    head_state: dict[str, torch.Tensor] | None = None  # the discarded per-task heads, on the CPU

    def with_adapters(self) -> nn.Module:
        """A copy of the retrained base with the run's task adapters re-attached."""
        if self.lora_config is None or self.adapter_state is None:
            raise MetanbError(f"method {self.config.method!r} trains no task adapters")
        model = add_multi_lora(copy.deepcopy(self.model), self.lora_config)
        keys = model.load_state_dict(self.adapter_state, strict=False)
        missing = [k for k in keys.missing_keys if ".lora_" in k]
        if keys.unexpected_keys or missing:
            raise MetanbError("adapter weights do not fit the model: "
                              f"{(keys.unexpected_keys or missing)[:3]}")
        return model


@dataclass
class StepContext:
    """What a method's step function may use: the prepared model, optimiser, data, config."""

    model: nn.Module
    optimizer: TaskAdamW
    accelerator: Accelerator
    precision: Precision
    device: torch.device
    streams: TaskStreams
    config: RetrainConfig
    routed: bool  # per-example task ids reach the model (task adapters and/or task heads)
    examples: int = 0  # examples processed in the current step (this process)

    def __post_init__(self) -> None:
        # what the ids route to, found once per run: walking every module to find out (as
        # route_tasks does) costs ~0.1 ms per micro-batch on a tiny model, more on a big one
        self._adapters = self.routed and bool(multi_lora_layers(self.model))
        self._heads = self.routed and bool(task_heads(self.model))

    def routing(self, ids: torch.Tensor) -> AbstractContextManager[Any]:
        """:func:`route_tasks` for this run's model (nothing when the run is not routed)."""
        if not self._heads:
            return use_tasks(self.model, ids) if self._adapters else nullcontext()
        stack = ExitStack()
        if self._adapters:
            stack.enter_context(use_tasks(self.model, ids))
        stack.enter_context(use_task_heads(self.model, ids))
        return stack

    def update(self, task_ids: Sequence[int], optimizer: TaskAdamW | None = None
               ) -> torch.Tensor:
        """One optimiser update on mixed batches of ``task_ids`` (``grad_accum`` micro-batches),
        by the loop's optimiser or ``optimizer`` (Reptile's inner one).

        Returns the mean micro-batch loss (detached). With adapters, each example of the mixed
        batch goes through its own task's adapter; forward *and* backward run inside
        ``use_tasks``, so layers re-run during backward (gradient checkpointing) see the ids.
        """
        acc, model, n = self.accelerator, self.model, self.config.grad_accum
        losses = []
        for micro in range(n):
            batch, ids = mix_batches([self.streams.next(t) for t in task_ids], task_ids)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            self.examples += len(ids)
            last = micro == n - 1  # gradients are all-reduced once, on the last micro-batch
            with nullcontext() if last else acc.no_sync(model):
                with self.routing(ids):
                    with self.precision.autocast():
                        loss = model(**batch).loss
                    self.precision.backward(loss / n)
            losses.append(loss.detach().float())
        opt = optimizer or self.optimizer
        self.precision.unscale(opt)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.grad is not None], self.config.max_grad_norm)
        opt.set_tasks(task_ids if self.routed else None)
        self.precision.step(opt)
        opt.zero_grad(set_to_none=True)
        return torch.stack(losses).mean()


@contextmanager
def route_tasks(model: nn.Module, ids: torch.Tensor) -> Iterator[None]:
    """Per-example task ids for the adapters and the per-task heads of ``model``."""
    with use_tasks(model, ids) if multi_lora_layers(model) else nullcontext():
        with use_task_heads(model, ids):
            yield


def uses_heads(method: RetrainMethod, config: RetrainConfig) -> bool:
    """Whether this run copies the head per task (methods that never do ignore task_heads, so
    one grid can hold SR and last-layer-ML); one line when a method needs a head name."""
    problem = missing_heads(method, config.task_heads)
    if problem:
        raise MetanbError(problem)
    return bool(config.task_heads) and method.task_heads != "never"


def linear_warmup_decay(steps: int, warmup: float, stretch: float = 1.0,
                        unit: float | None = None) -> Callable[[int], float]:
    """lr factor: up linearly over ``ceil(warmup * unit)`` steps (the first step at
    1/(warm+1), never 0, so no step is wasted), then linearly down towards 0 at step
    ``stretch * unit`` (``unit`` = ``steps`` unless given; stretch 1: 0 at the end; > 1 stops
    short of 0, as the official --sm does)."""
    unit = steps if unit is None else unit
    warm = math.ceil(warmup * unit)
    end = stretch * unit

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (end - step) / max(1, end - warm))

    return factor


def _cpu_only(device: str | None) -> bool:
    return device == "cpu" or not torch.cuda.is_available()


def process_state(device: str | None = None) -> PartialState:
    """accelerate's view of this process (rank, world size), the same for every caller.

    On a machine without CUDA, accelerate sets up a multi-process CPU (gloo) group only when
    asked with ``cpu=True``; asked without it, every process of a torchrun launch believes it is
    alone (and the main one). Every part of metanb asks through here, so they all agree.
    """
    from accelerate import PartialState

    return PartialState(cpu=_cpu_only(device))


def make_accelerator(device: str | None = None, unused_parameters: bool = False
                     ) -> Accelerator:
    """The process's ``accelerate.Accelerator`` (data parallelism only: precision and device
    placement are this loop's, so runs of any settings can share one process).

    ``unused_parameters``: some parameters get no gradient in a step (the heads of absent
    tasks), which DistributedDataParallel must be told.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    process_state(device)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if (
        unused_parameters) else []
    try:
        return Accelerator(cpu=_cpu_only(device), device_placement=False,
                           kwargs_handlers=handlers)
    except ValueError as exc:  # accelerate's state is set once per process
        raise MetanbError(f"cannot train on {device or 'auto'} in this process: {exc}; run it "
                          "in a fresh process, or pass accelerator=") from None


def resolve_device(device: str | None, accelerator: Accelerator) -> torch.device:
    """The device a run trains on: the launcher's (GPU if any) for None, or the one asked."""
    if device == "cuda" and not torch.cuda.is_available():
        raise MetanbError("device='cuda' but torch sees no CUDA GPU (a CPU-only build, or none "
                          "visible); use device 'auto' or 'cpu'")
    if device == "cpu":
        if accelerator.num_processes > 1 and accelerator.device.type != "cpu":
            raise MetanbError("device='cpu' inside a multi-GPU launch; launch CPU processes "
                              "(CUDA_VISIBLE_DEVICES= torchrun ...) or use device 'auto'")
        return torch.device("cpu")
    return accelerator.device


def reseed(seed: int, process: int, step: int) -> None:
    """Seed torch (CPU and CUDA) for one step of one process."""
    value = derive_seed(seed, "step", process, step)
    # not torch.manual_seed: it queues lazy seeding of every accelerator backend with a
    # formatted stack trace, about a millisecond a call, which small models feel every step
    torch.default_generator.manual_seed(value)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(value)


def retrain(
    model: nn.Module,
    tasks: Sequence[Iterable[Batch]],
    config: RetrainConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    inplace: bool = False,
    accelerator: Accelerator | None = None,
    **options: Any,
) -> RetrainResult:
    """Retrain ``model`` on ``tasks`` (one iterable of batches per task).

    Pass a :class:`RetrainConfig`, or its fields as keywords (``method``, ``rank``/``r``,
    ``steps``, ``lr``, ``target_modules``, ``seed``, ...), or a config plus keywords that
    override it. ``model`` is not modified unless ``inplace=True`` (no copy: half the memory
    for a large model). With ``checkpoint``, the full state is saved atomically every
    ``checkpoint_every`` steps and at the end; if the file exists, the run resumes from it
    exactly (same config required). The returned model lives on the device it trained on.
    """
    if config is None:
        config = RetrainConfig.from_options(**options)
    elif options:
        config = config.with_options(**options)
    saver = Checkpoint(Path(checkpoint), checkpoint_every) if checkpoint is not None else None
    target = model if inplace else copy.deepcopy(model)
    return run_retraining(target, list(tasks), config, saver, progress, accelerator)


def run_retraining(
    model: nn.Module,
    tasks: list[Iterable[Batch]],
    config: RetrainConfig,
    saver: Checkpoint | None = None,
    progress: bool = True,
    accelerator: Accelerator | None = None,
) -> RetrainResult:
    """The loop itself, on ``model`` in place (``retrain`` hands it a copy)."""
    if not tasks:
        raise MetanbError("tasks is empty; pass one iterable of batches per task")
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        return _run(model, tasks, config, saver, progress, accelerator)


def _run(model: nn.Module, tasks: list[Iterable[Batch]], config: RetrainConfig,
         saver: Checkpoint | None, progress: bool, accelerator: Accelerator | None
         ) -> RetrainResult:
    method = get_method(config.method)
    acc = accelerator or make_accelerator(config.device, uses_heads(method, config))
    if acc.mixed_precision not in ("no", config.mixed_precision):
        raise MetanbError(f"the launcher asks for mixed precision {acc.mixed_precision!r} but "
                          f"the run for {config.mixed_precision!r}; set mixed_precision in "
                          "the run's config, not in accelerate's")
    device = resolve_device(config.device, acc)
    precision = Precision(config.mixed_precision, device)
    was_training = model.training
    torch.manual_seed(config.seed)  # the same initialisation on every process
    heads = uses_heads(method, config)
    if method.task_adapters:
        add_multi_lora(model, config.lora_config(len(tasks)))
    if heads:
        add_task_heads(model, config.task_heads, len(tasks),
                       config.seed if config.head_init == "fresh" else None)
    if not any(p.requires_grad for p in model.parameters()):
        raise MetanbError("the model has no trainable parameters (all requires_grad=False)")
    model.to(device)
    optimizer = make_optimizer(model, scheduled_lr(config), config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(config.steps, config.warmup, config.schedule_stretch,
                                       schedule_length(config, method.turns, tasks)))
    wrapped = acc.prepare_model(model, device_placement=False)
    streams = TaskStreams(tasks, acc.process_index, acc.num_processes)
    history: list[dict[str, Any]] = []
    start = 0
    state = saver.load(config, len(tasks)) if saver is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        precision.load_state_dict(state.get("scaler"))
        streams.load_state_dict(state["streams"])
        history, start = list(state["history"]), int(state["step"])
    if saver is not None:
        acc.wait_for_everyone()  # nobody writes a checkpoint another process is still reading

    ctx = StepContext(wrapped, optimizer, acc, precision, device, streams, config,
                      method.task_adapters or heads)
    wrapped.train()
    elapsed = history[-1]["seconds"] if history else 0.0
    cpu_elapsed = history[-1].get("cpu_seconds", 0.0) if history else 0.0
    began, cpu_began = time.perf_counter() - elapsed, time.process_time() - cpu_elapsed
    # at most one refresh a second: in a notebook every refresh is a few kernel messages, and a
    # flood of them overflows the output channel (Jupyter drops messages past its high-water mark)
    bar = tqdm(total=config.steps, initial=start, desc=config.method, mininterval=1.0,
               disable=not progress or not acc.is_main_process)
    order = turn_order(method.turns, tasks) if config.task_order == "in-turn" else None
    for step in range(start, config.steps):
        ids = step_tasks(config, len(tasks), step, order)
        reseed(config.seed, acc.process_index, step)
        lr = scheduler.get_last_lr()[0]
        ctx.examples = 0
        loss = acc.reduce(method.step(ctx, ids), reduction="mean").item()
        scheduler.step()
        history.append({"step": step + 1, "loss": loss, "lr": lr, "tasks": ids,
                        "examples": ctx.examples,  # this step's, on this process
                        # since the run began (across resumes): wall clock, this process's CPU
                        "seconds": time.perf_counter() - began,
                        "cpu_seconds": time.process_time() - cpu_began})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if saver is not None and saver.due(done, config.steps):
            if acc.is_main_process:
                saver.save({
                    "config": config.identity(), "num_tasks": len(tasks), "step": done,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": precision.state_dict(),
                    "streams": streams.state_dict(), "history": history})
            acc.wait_for_everyone()
    bar.close()

    model = acc.unwrap_model(wrapped, keep_fp32_wrapper=False)
    head_state = remove_task_heads(model) if heads else None
    lora_config = adapter_state = None
    if multi_lora_layers(model):
        lora_config = get_multi_lora_config(model)
        adapter_state = {k: v.detach().to("cpu").clone()
                         for k, v in model.state_dict().items() if ".lora_" in k}
        remove_multi_lora(model)
    model.train(was_training)
    return RetrainResult(model, history, config, lora_config, adapter_state,
                         resumed_from=start if state is not None else None,
                         head_state=head_state)
