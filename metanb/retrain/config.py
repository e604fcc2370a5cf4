"""What a retraining run is: one dataclass, the single source of truth.

:class:`RetrainSettings` holds the hyper-parameters that every caller shares (the experiment
config embeds it field by field, so a new option added here is at once a ``retrain()``
keyword, a ``--set retrain.<name>=...`` key of the CLI and a line of every results record).
:class:`RetrainConfig` adds what identifies one run: the method, the adapter rank, the layers
that carry adapters, the seed and the device. Adapter settings use PEFT's names (``r``,
``lora_alpha``, ``lora_dropout``, ``target_modules``), so they read like a ``peft.LoraConfig``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metanb.errors import MetanbError

MIXED_PRECISION: tuple[str, ...] = ("no", "fp16", "bf16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
TASK_ORDERS: tuple[str, ...] = ("random", "in-turn")
HEAD_INITS: tuple[str, ...] = ("copy", "fresh")
OUTER_OPTIMIZERS: tuple[str, ...] = ("interpolate", "adamw")
SCHEDULE_UNITS: tuple[str, ...] = ("steps", "largest-task")
# "all tasks per step, capped": a mixed batch of 8 task batches is already 8x a task batch
MAX_DEFAULT_TASKS_PER_STEP = 8
# retrain()'s historical keyword for ``r`` (PEFT's name); both are accepted
KEYWORD_ALIASES: dict[str, str] = {"rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout"}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class RetrainSettings:
    """The optimisation settings of a retraining run (shared by ``retrain()`` and experiments)."""

    steps: int = field(default=200, metadata=_help("retraining optimiser steps"))
    lr: float = field(default=1e-4, metadata=_help("peak learning rate (AdamW)"))
    tasks_per_step: int | None = field(
        default=None,
        metadata=_help("tasks mixed in one step (None = all, capped at "
                       f"{MAX_DEFAULT_TASKS_PER_STEP}); a fresh seeded subset each step"))
    task_order: str = field(
        default="random",
        metadata=_help("which tasks a capped step takes: random (a fresh seeded subset) | "
                       "in-turn (the official loops' order: SR task after task, LoRA-ML and "
                       "last-layer-ML round-robin, Reptile each task once an epoch)"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimiser step"))
    mixed_precision: str = field(default="no", metadata=_help("no | fp16 | bf16 (autocast)"))
    lora_alpha: float | None = field(
        default=None,
        metadata=_help("adapter scaling is lora_alpha / r; None = 2 r (scaling 2 at any rank)"))
    lora_dropout: float = field(default=0.0, metadata=_help("dropout on the adapters' input"))
    symmetric: bool = field(
        default=False, metadata=_help("U Uᵀ adapters (square layers), as in the linear theory"))
    train_base: bool = field(
        default=True,
        metadata=_help("train the base with the adapters (LoRA-ML); False = adapters only"))
    warmup: float = field(
        default=0.1, metadata=_help("fraction of steps of linear warmup, then linear decay"))
    schedule_stretch: float = field(
        default=1.0,
        metadata=_help("the linear decay aims at 0 at stretch x steps (1 = reaches 0 at the "
                       "end; the official scripts' --sm 6.67 never gets near 0)"))
    schedule_unit: str = field(
        default="steps",
        metadata=_help("what warmup and schedule_stretch multiply: steps (the run's) | "
                       "largest-task (the official SR / LoRA-ML / last-layer-ML scripts: the "
                       "largest task's batches x epochs = steps x max batches / all batches; "
                       "Reptile's stays steps, T x epochs, as reptile.py)"))
    weight_decay: float = field(
        default=0.0,
        metadata=_help("AdamW's decoupled decay; 0 so that nothing pulls the base off A*"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("gradient clipping norm (None = no clipping)"))
    task_heads: str | None = field(
        default=None,
        metadata=_help("output head given one copy per task during retraining and discarded "
                       "after (the paper's LoRA-ML and last-layer-ML: e.g. classifier); None = "
                       "one shared head"))
    head_init: str = field(
        default="copy",
        metadata=_help("per-task heads start as copies of the head (copy) or freshly "
                       "initialised, seeded (fresh: the official MultiHeadClassifier's)"))
    inner_steps: int = field(
        default=4, metadata=_help("reptile: inner optimiser steps on one task"))
    meta_step: float = field(
        default=1.0,
        metadata=_help("reptile: outer step θ <- θ + meta_step · mean_t(φ_t - θ)"))
    outer_optimizer: str = field(
        default="interpolate",
        metadata=_help("reptile: interpolate (meta_step) | adamw (an outer AdamW at outer_lr, "
                       "scheduled, on the gradient Σ_t(θ - φ_t)/T, which moves θ towards the "
                       "φ_t; inner steps then use a fresh AdamW per task at a constant lr)"))
    outer_lr: float = field(
        default=1e-4, metadata=_help("reptile with outer_optimizer=adamw: the outer lr"))

    def problems(self, prefix: str = "") -> list[str]:
        """Every inconsistent setting as a message (empty when all is well)."""
        checks = [
            (self.steps >= 1, f"{prefix}steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"{prefix}lr must be > 0, got {self.lr}"),
            (self.grad_accum >= 1, f"{prefix}grad_accum must be >= 1, got {self.grad_accum}"),
            (self.tasks_per_step is None or self.tasks_per_step >= 1,
             f"{prefix}tasks_per_step must be >= 1 (or none for all, capped at "
             f"{MAX_DEFAULT_TASKS_PER_STEP}), got {self.tasks_per_step}"),
            (self.mixed_precision in MIXED_PRECISION,
             f"unknown {prefix}mixed_precision {self.mixed_precision!r}; choose from "
             + ", ".join(MIXED_PRECISION)),
            (self.lora_alpha is None or self.lora_alpha > 0,
             f"{prefix}lora_alpha must be > 0, got {self.lora_alpha}"),
            (0.0 <= self.lora_dropout < 1.0,
             f"{prefix}lora_dropout must be in [0, 1), got {self.lora_dropout}"),
            (0.0 <= self.warmup < 1.0,
             f"{prefix}warmup is a fraction of steps in [0, 1), got {self.warmup}"),
            (self.weight_decay >= 0, f"{prefix}weight_decay must be >= 0, got "
             f"{self.weight_decay}"),
            (self.max_grad_norm is None or self.max_grad_norm > 0,
             f"{prefix}max_grad_norm must be > 0 or none, got {self.max_grad_norm}"),
            (self.inner_steps >= 1, f"{prefix}inner_steps must be >= 1, got {self.inner_steps}"),
            (self.meta_step > 0, f"{prefix}meta_step must be > 0, got {self.meta_step}"),
            (self.task_order in TASK_ORDERS,
             f"unknown {prefix}task_order {self.task_order!r}; choose from "
             + ", ".join(TASK_ORDERS)),
            (self.head_init in HEAD_INITS,
             f"unknown {prefix}head_init {self.head_init!r}; choose from " + ", ".join(HEAD_INITS)),
            (self.schedule_stretch >= 1.0,
             f"{prefix}schedule_stretch must be >= 1, got {self.schedule_stretch}"),
            (self.outer_optimizer in OUTER_OPTIMIZERS,
             f"unknown {prefix}outer_optimizer {self.outer_optimizer!r}; choose from "
             + ", ".join(OUTER_OPTIMIZERS)),
            (self.outer_lr > 0, f"{prefix}outer_lr must be > 0, got {self.outer_lr}"),
            (self.schedule_unit in SCHEDULE_UNITS,
             f"unknown {prefix}schedule_unit {self.schedule_unit!r}; choose from "
             + ", ".join(SCHEDULE_UNITS)),
        ]
        return [message for ok, message in checks if not ok]

    def settings(self) -> dict[str, Any]:
        """Just the shared settings (what a :class:`RetrainConfig` copies from a section)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RetrainSettings)}


@dataclass(frozen=True)
class RetrainConfig(RetrainSettings):
    """Everything that defines one retraining run (and must match to resume a checkpoint)."""

    method: str = field(default="lora-ml", metadata=_help("a method of the registry"))
    r: int = field(default=8, metadata=_help("rank of every task adapter (PEFT's r)"))
    target_modules: str | tuple[str, ...] = field(
        default=("query", "value"),
        metadata=_help("layers that carry adapters: a regex on the full name, or names "
                       "matched exactly or as a dotted suffix (as in PEFT)"))
    seed: int = field(default=0, metadata=_help("seeds initialisation, dropout and sampling"))
    device: str | None = field(
        default=None,
        metadata=_help("auto/None (GPU if any; each process's own under a launcher) | cpu | "
                       "cuda"))

    def __post_init__(self) -> None:
        from metanb.retrain.methods import get_method

        if isinstance(self.target_modules, Sequence) and not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.device == "auto":
            object.__setattr__(self, "device", None)
        get_method(self.method)
        problems = self.problems()
        if self.r < 1:
            problems.insert(0, f"rank must be at least 1, got {self.r}")
        if self.device not in (None, "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r} (choose "
                            "GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)")
        if not self.target_modules:
            problems.append("target_modules is empty; name at least one Linear layer")
        if problems:
            raise MetanbError(problems[0])

    @property
    def rank(self) -> int:
        """``r`` under the name the rest of the package uses."""
        return self.r

    @property
    def alpha(self) -> float:
        """The adapters' alpha: ``lora_alpha``, or 2 r when unset."""
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.r

    @classmethod
    def from_options(cls, **options: Any) -> RetrainConfig:
        """A config from keyword options (``rank``/``alpha``/``dropout`` accepted for ``r``,
        ``lora_alpha``, ``lora_dropout``); an unknown name is a clear error, not a TypeError."""
        options = canonical_options(options)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise MetanbError(
                f"unknown retraining options {unknown}; valid ones: {', '.join(names)} "
                f"(and {', '.join(KEYWORD_ALIASES)})")
        return cls(**options)

    def with_options(self, **options: Any) -> RetrainConfig:
        """This config with some fields replaced (keywords as :meth:`from_options` takes)."""
        return RetrainConfig.from_options(**{**dataclasses.asdict(self),
                                             **canonical_options(options)})

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share to be resumed: everything but where it runs."""
        out = dataclasses.asdict(self)
        out.pop("device")
        out["target_modules"] = (list(self.target_modules)
                                 if isinstance(self.target_modules, tuple)
                                 else self.target_modules)
        return out

    def lora_config(self, num_tasks: int) -> Any:
        """The multi-task adapters a method with per-task adapters attaches."""
        from metanb.lora import MultiLoraConfig

        return MultiLoraConfig(
            num_tasks=num_tasks, rank=self.r, alpha=self.alpha, dropout=self.lora_dropout,
            target_modules=self.target_modules, symmetric=self.symmetric,
            train_base=self.train_base)


def canonical_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options with ``rank``/``alpha``/``dropout`` renamed to PEFT's field names."""
    out = dict(options)
    for old, new in KEYWORD_ALIASES.items():
        if old in out:
            if new in out:
                raise MetanbError(f"pass either {old} or {new}, not both")
            out[new] = out.pop(old)
    return out


def settings_from(section: Any | Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`RetrainSettings` fields of an object or mapping that embeds them."""
    names = [f.name for f in dataclasses.fields(RetrainSettings)]
    if isinstance(section, Mapping):
        return {n: section[n] for n in names if n in section}
    return {n: getattr(section, n) for n in names}
