"""One cell of the vision grid: retrain an MLP-Mixer with a method, fine-tune on the unseen pair.

:func:`retrain_vision` retrains once, :func:`finetune_vision` adapts the result to the unseen
pair; the grid (:mod:`metanb.experiments.vision`) calls both, :func:`run_vision_cell` is the
two in one call. Everything goes through the package's one loop (:func:`metanb.retrain.retrain`)
and :mod:`metanb.finetune`. What differs from the official code, on purpose: AdamW with linear
warmup/decay (the loop's) for its Adam + cosine; Reptile's outer step is the loop's
interpolation (correct sign) with AdamW inner steps; biases are kept everywhere.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metanb.data.images import ImageSet
from metanb.errors import MetanbError
from metanb.vision.mixer import ALL_LINEAR, HEAD, MixerConfig, MLPMixer
from metanb.vision.tasks import VisionTasks, get_dataset, make_tasks

FINETUNES = ("lora", "head")


@dataclass(frozen=True)
class VisionSettings:
    """One profile of the experiment; the defaults are the paper's (CIFAR-10, 100 epochs)."""

    dataset: str = "cifar10"
    batch_size: int = 256
    retrain_epochs: int = 100
    finetune_epochs: int = 100
    retrain_lr: float = 1e-4
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-5
    rank: int = 1  # every adapter, retraining and fine-tuning; no alpha scaling (alpha = r)
    inner_steps: int = 20  # reptile
    mixed_precision: str = "no"  # bf16 / fp16 on a GPU (the paper used AMP)
    dim: int | None = None  # the Mixer's width; None = the data set's default

    def mixer(self) -> MixerConfig:
        base = get_dataset(self.dataset).mixer
        return base if self.dim is None else MixerConfig(**{**asdict(base), "dim": self.dim})


def retrain_options(method: str, settings: VisionSettings) -> dict[str, Any]:
    """The ``retrain`` keywords of a method under ``settings`` (steps are set by the caller)."""
    common = {"lr": settings.retrain_lr, "weight_decay": settings.weight_decay,
              "mixed_precision": settings.mixed_precision, "target_modules": ALL_LINEAR,
              "rank": settings.rank, "lora_alpha": float(settings.rank)}
    extra: dict[str, dict[str, Any]] = {
        "standard": {}, "lora-ml": {}, "last-layer-ml": {"task_heads": HEAD},
        "reptile": {"inner_steps": settings.inner_steps}}
    if method not in extra:
        raise MetanbError(f"unknown vision method {method!r}; choose from {', '.join(extra)}")
    return common | extra[method]


def vision_tasks(seed: int, settings: VisionSettings, data: tuple[ImageSet, ImageSet]
                 ) -> VisionTasks:
    """The retraining pairs, the unseen pair and its test images of one seed."""
    return make_tasks(*data, batch_size=settings.batch_size,
                      retrain_epochs=settings.retrain_epochs,
                      finetune_epochs=settings.finetune_epochs, seed=seed,
                      augment=get_dataset(settings.dataset).augment)


def retrain_vision(method: str, seed: int, settings: VisionSettings, tasks: VisionTasks,
                   checkpoint: str | Path | None = None, device: str | None = None,
                   progress: bool = False, checkpoint_every: int = 50
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh Mixer (initialised from ``seed``) retrained on the four retraining pairs, and
    what describes it: retrain_steps, retrain_final_loss, retrain_wall_s.

    Every task is seen ``retrain_epochs`` times; Reptile, whose one step is ``inner_steps``
    updates of one task, gets ``inner_steps`` times fewer steps (the same updates per task).
    """
    from metanb.retrain import retrain

    options = retrain_options(method, settings)
    steps = max(len(t) for t in tasks.retrain)
    if method == "reptile":
        steps = max(1, steps // settings.inner_steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPMixer(settings.mixer())
    began = time.perf_counter()
    res = retrain(model, tasks.retrain, method=method, steps=steps, seed=seed, device=device,
                  checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                  inplace=True, **options)
    info = {"retrain_steps": steps, "retrain_final_loss": float(res.history[-1]["loss"]),
            "retrain_wall_s": round(time.perf_counter() - began, 3)}
    return res.model, info


def finetune_vision(model: nn.Module, finetune: str, seed: int, settings: VisionSettings,
                    tasks: VisionTasks, device: str | None = None, progress: bool = False
                    ) -> nn.Module:
    """A copy of ``model`` fitted on the unseen pair: a fresh rank-``settings.rank`` LoRA on
    every Linear (``lora``) or its output layer alone (``head``); the base is frozen."""
    from metanb.finetune import finetune_head, finetune_lora
    from metanb.lora import linear_module_names

    if finetune not in FINETUNES:
        raise MetanbError(f"unknown fine-tuning {finetune!r}; choose from {', '.join(FINETUNES)}")
    ft = {"steps": len(tasks.finetune), "lr": settings.finetune_lr, "seed": seed,
          "progress": progress, "weight_decay": settings.weight_decay, "device": device,
          "mixed_precision": settings.mixed_precision}
    if finetune == "lora":
        # PEFT reads a regex as matching containers too: name every Linear exactly
        return finetune_lora(model, tasks.finetune, rank=settings.rank,
                             target_modules=linear_module_names(model),
                             alpha=float(settings.rank), **ft)
    return finetune_head(model, tasks.finetune, head=HEAD, **ft)


def run_vision_cell(method: str, seed: int, settings: VisionSettings,
                    data: tuple[ImageSet, ImageSet], finetune: str = "lora",
                    checkpoint: str | Path | None = None, device: str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Retrain, fine-tune on the unseen pair's training images, score on its test images.

    ``data`` is the (train, test) split of ``settings.dataset`` (loaded once by the caller).
    Keys: method, seed, finetune, accuracy, pretrained_accuracy (the retrained model on the
    unseen pair, before fine-tuning), retrain_loss, retrain_steps, finetune_steps,
    retrain_seconds, finetune_seconds. The grid (``python -m metanb run vision``) runs the
    same two steps, retraining once per cell for every fine-tuning.
    """
    from metanb.finetune import evaluate_accuracy

    if finetune not in FINETUNES:
        raise MetanbError(f"unknown fine-tuning {finetune!r}; choose from {', '.join(FINETUNES)}")
    tasks = vision_tasks(seed, settings, data)
    retrained, info = retrain_vision(method, seed, settings, tasks, checkpoint, device, progress)
    began = time.perf_counter()
    tuned = finetune_vision(retrained, finetune, seed, settings, tasks, device, progress)
    return {
        "method": method, "seed": seed, "finetune": finetune,
        "accuracy": evaluate_accuracy(tuned, tasks.test),
        "pretrained_accuracy": evaluate_accuracy(retrained, tasks.test),
        "retrain_loss": info["retrain_final_loss"], "retrain_steps": info["retrain_steps"],
        "finetune_steps": len(tasks.finetune), "retrain_seconds": info["retrain_wall_s"],
        "finetune_seconds": time.perf_counter() - began,
    }
