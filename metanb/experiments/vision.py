"""The vision experiment as a grid: its config, and the cell the shared runner calls.

``python -m metanb run vision --profile quick --out DIR`` retrains an MLP-Mixer on the four
retraining class pairs with each method and seed, and evaluates each base on the unseen pair
(8 vs 9): as is (fine-tuning ``0``), after a fresh rank-r LoRA on every Linear, and after
fitting its output layer alone (``head``). The runner (:mod:`metanb.experiments.runner`)
handles resume, records and provenance; :mod:`metanb.vision` the model, tasks and training.

Profiles (``metanb/experiments/profiles/vision/``): ``quick`` = scikit-learn's 8 x 8 digits on
a CPU in minutes; ``colab`` = CIFAR-10 on one free-tier GPU, fewer epochs; ``paper`` = the
official CIFAR-10 settings (100 epochs, seeds 1-5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError
from metanb.experiments.grid import Cell, CellContext, CellResult, FinetuneSpec
from metanb.experiments.schema import Settings
from metanb.retrain.config import DEVICES, MIXED_PRECISION
from metanb.retrain.methods import METHODS
from metanb.vision.cell import VisionSettings
from metanb.vision.tasks import DATASETS, UNSEEN_PAIR

VISION_METHODS = ("standard", "lora-ml", "last-layer-ml", "reptile")  # what the cell supports
TASK = f"{UNSEEN_PAIR[0]}/{UNSEEN_PAIR[1]}"  # the one held-out task, as records name it


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class VisionDataConfig:
    dataset: str = field(default="cifar10", metadata=_help(
        "cifar10 (downloaded once, sha256-pinned) | digits (scikit-learn's 8x8, offline)"))
    folder: str | None = field(default=None, metadata=_help(
        "cifar10: the folder it is downloaded to and read from"))


@dataclass
class VisionModelConfig:
    dim: int | None = field(default=None, metadata=_help(
        "the Mixer's width; none = the data set's (512 for CIFAR-10, the paper's; 64 digits)"))


@dataclass
class VisionRetrainConfig:
    methods: list[str] = field(default_factory=lambda: list(VISION_METHODS), metadata=_help(
        "retraining methods: " + ", ".join(VISION_METHODS)))
    ranks: list[int] = field(default_factory=lambda: [1], metadata=_help(
        "LoRA-ML's adapter rank(s) on every Linear (a grid axis; the paper: 1)"))
    epochs: int = field(default=100, metadata=_help("passes over each retraining pair"))
    lr: float = field(default=1e-4, metadata=_help("retraining learning rate (AdamW)"))
    batch_size: int = field(default=256, metadata=_help("images per task batch (and fine-tuning)"))
    weight_decay: float = field(default=1e-5, metadata=_help("weight decay (and fine-tuning)"))
    inner_steps: int = field(default=20, metadata=_help(
        "reptile: inner steps on one task per outer step"))
    mixed_precision: str = field(default="no", metadata=_help(
        "no | fp16 | bf16 (the paper used AMP on its GPU)"))
    checkpoint_every: int = field(default=50, metadata=_help(
        "steps between resumable retraining checkpoints"))


@dataclass
class VisionFinetuneConfig:
    ranks: list[int] = field(default_factory=lambda: [1], metadata=_help(
        "LoRA ranks for the unseen pair (rank 0, no fine-tuning, is always evaluated)"))
    head: bool = field(default=True, metadata=_help("also fine-tune the output layer alone"))
    match_retrain_rank: bool = field(default=False, metadata=_help(
        "fine-tune a base retrained at rank r at rank r only"))
    epochs: int = field(default=100, metadata=_help("passes over the unseen pair's images"))
    lr: float = field(default=5e-4, metadata=_help("fine-tuning learning rate"))


@dataclass
class VisionConfig(Settings):
    experiment: str = field(default="vision", metadata=_help("experiment name"))
    profile: str | None = field(default=None, metadata=_help("profile this config came from"))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5],
                             metadata=_help("run seeds (grid axis)"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda"))
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
    retrain: VisionRetrainConfig = field(default_factory=VisionRetrainConfig)
    finetune: VisionFinetuneConfig = field(default_factory=VisionFinetuneConfig)

    def validate(self) -> VisionConfig:
        """Raise a one-line MetanbError for the first inconsistent setting; return self."""
        r, f = self.retrain, self.finetune
        if self.experiment != "vision":
            raise MetanbError(f"a vision config has experiment 'vision', not {self.experiment!r}")
        if self.data.dataset not in DATASETS:
            raise MetanbError(f"unknown data.dataset {self.data.dataset!r}; choose from "
                              + ", ".join(DATASETS))
        if not r.methods:
            raise MetanbError("retrain.methods is empty; list at least one of "
                              + ", ".join(VISION_METHODS))
        for method in r.methods:
            if method not in VISION_METHODS:
                known = "" if method in METHODS else " (not a registered method)"
                raise MetanbError(f"retrain.methods holds {method!r}{known}; the vision "
                                  f"experiment runs {', '.join(VISION_METHODS)}")
        if self.device not in DEVICES:
            raise MetanbError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        if r.mixed_precision not in MIXED_PRECISION:
            raise MetanbError(f"unknown retrain.mixed_precision {r.mixed_precision!r}; choose "
                              "from " + ", ".join(MIXED_PRECISION))
        for key, values in (("seeds", self.seeds), ("retrain.methods", r.methods),
                            ("retrain.ranks", r.ranks), ("finetune.ranks", f.ranks)):
            if len(set(values)) != len(values):
                raise MetanbError(f"{key} lists a value twice; list each value once")
        if not self.seeds:
            raise MetanbError("seeds is empty; give at least one seed, e.g. [1]")
        if not r.ranks:
            raise MetanbError("retrain.ranks is empty; give at least one LoRA rank, e.g. [1]")
        if not f.ranks and not f.head:
            raise MetanbError("finetune.ranks is empty and finetune.head is false: nothing to "
                              "fine-tune")
        positive = {"retrain.epochs": r.epochs, "retrain.batch_size": r.batch_size,
                    "retrain.inner_steps": r.inner_steps,
                    "retrain.checkpoint_every": r.checkpoint_every, "finetune.epochs": f.epochs,
                    **{"retrain.ranks": min(r.ranks)},
                    **({"finetune.ranks": min(f.ranks)} if f.ranks else {}),
                    **({"model.dim": self.model.dim} if self.model.dim is not None else {})}
        for key, value in positive.items():
            if value < 1:
                raise MetanbError(f"{key} must be >= 1, got {value}")
        for key, value in (("retrain.lr", r.lr), ("finetune.lr", f.lr)):
            if not value > 0:
                raise MetanbError(f"{key} must be > 0, got {value}")
        if r.weight_decay < 0:
            raise MetanbError(f"retrain.weight_decay must be >= 0, got {r.weight_decay}")
        return self

    def settings(self, rank: int) -> VisionSettings:
        """The :class:`metanb.vision.cell.VisionSettings` of one adapter rank."""
        r, f = self.retrain, self.finetune
        return VisionSettings(
            dataset=self.data.dataset, batch_size=r.batch_size, retrain_epochs=r.epochs,
            finetune_epochs=f.epochs, retrain_lr=r.lr, finetune_lr=f.lr,
            weight_decay=r.weight_decay, rank=rank, inner_steps=r.inner_steps,
            mixed_precision=r.mixed_precision, dim=self.model.dim)

    def setup_summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """What the results tables say about the setup (as convai2's model, data, T, n, m)."""
        mixer = self.settings(1).mixer()
        data = {"cifar10": "CIFAR-10 (binary archive)",
                "digits": "scikit-learn digits (8x8)"}[self.data.dataset]
        sizes = {r.get("finetune_images") for r in records} - {None}
        return {"model": f"MLP-Mixer (dim {mixer.dim}, patch {mixer.patch_size})",
                "data": f"{data}, unseen pair {TASK}", "T": 4, "heldout": 1,
                "n": sizes.pop() if len(sizes) == 1 else None, "m": 2}


def _data(config: VisionConfig, ctx: CellContext) -> Any:
    """The (train, test) images, loaded once per invocation."""
    key = f"vision-data-{config.data.dataset}"
    if key not in ctx.cache:
        folder = Path(config.data.folder) if config.data.folder else None
        ctx.cache[key] = DATASETS[config.data.dataset].load(folder, ctx.progress)
    return ctx.cache[key]


def vision_cell(cell: Cell, specs: list[FinetuneSpec], ctx: CellContext
                ) -> Iterator[CellResult]:
    """Retrain one (method, seed, rank) Mixer (or reload it) and evaluate it under each spec.

    The retrained base is saved to the cell's work folder before its first evaluation, so an
    interrupted cell resumes with its evaluations, not with retraining.
    """
    from metanb.finetune import evaluate_accuracy
    from metanb.io import atomic_save_torch, load_torch
    from metanb.vision.cell import finetune_vision, retrain_vision, vision_tasks
    from metanb.vision.mixer import MLPMixer

    config: VisionConfig = ctx.config  # type: ignore[assignment]
    device = None if config.device == "auto" else config.device
    rank = cell.retrain_rank if cell.retrain_rank is not None else config.retrain.ranks[0]
    settings = config.settings(rank)
    tasks = vision_tasks(cell.seed, settings, _data(config, ctx))
    base_path = ctx.workdir / "base.pt"
    if base_path.exists():  # retrained before an interruption
        saved = load_torch(base_path)
        model = MLPMixer(settings.mixer())
        model.load_state_dict(saved["state_dict"])
        info = saved["info"]
    else:
        model, info = retrain_vision(cell.method, cell.seed, settings, tasks,
                                     checkpoint=ctx.workdir / "retrain.ckpt", device=device,
                                     progress=ctx.progress,
                                     checkpoint_every=config.retrain.checkpoint_every)
        if ctx.is_main:
            atomic_save_torch(base_path, {"state_dict": model.state_dict(), "info": info})
    model.eval()
    sizes = {"finetune_images": len(tasks.finetune.data), "test_images":
             sum(len(b["labels"]) for b in tasks.test), "dataset": config.data.dataset}
    for spec in specs:
        began = time.perf_counter()
        if spec.kind == "none":
            tuned, steps = model, 0
        else:
            kind = "head" if spec.kind == "head" else "lora"
            ft_settings = replace(settings, rank=spec.rank or rank)
            tuned = finetune_vision(model, kind, cell.seed, ft_settings, tasks, device,
                                    ctx.progress)
            steps = len(tasks.finetune)
        accuracy = evaluate_accuracy(tuned, tasks.test)
        yield CellResult(spec=spec, accuracy_per_persona={TASK: accuracy},
                         wall_s=time.perf_counter() - began,
                         extra={**info, **sizes, "finetune_steps": steps})
