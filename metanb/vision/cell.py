"""One cell of the vision grid: retrain an MLP-Mixer with a method, fine-tune on the unseen pair.

The runner (``python -m metanb run vision``) calls :func:`run_vision_cell` once per (method,
seed, fine-tuning) and stores what it returns; everything here goes through the package's one
loop (:func:`metanb.retrain.retrain`) and :mod:`metanb.finetune`. What differs from the
official code, on purpose: AdamW with linear warmup/decay (the loop's) for its Adam + cosine;
Reptile's outer step is the loop's interpolation (correct sign) with AdamW inner steps; biases
are kept everywhere.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from metanb.data.images import ImageSet
from metanb.errors import MetanbError
from metanb.vision.mixer import ALL_LINEAR, HEAD, MixerConfig, MLPMixer
from metanb.vision.tasks import get_dataset, make_tasks

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


def run_vision_cell(method: str, seed: int, settings: VisionSettings,
                    data: tuple[ImageSet, ImageSet], finetune: str = "lora",
                    checkpoint: str | Path | None = None, device: str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Retrain a fresh Mixer (initialised from ``seed``) on the four retraining pairs, fine-tune
    it on the unseen pair's training images, return its accuracy on their test images.

    ``data`` is the (train, test) split of ``settings.dataset`` (loaded once by the caller).
    Keys: method, seed, finetune, accuracy, the retraining pairs' accuracy before fine-tuning
    (pretrained_accuracy, the unseen pair), retrain_loss, retrain_steps, finetune_steps,
    retrain_seconds, finetune_seconds.
    """
    from metanb.finetune import evaluate_accuracy, finetune_head, finetune_lora
    from metanb.lora import linear_module_names
    from metanb.retrain import retrain

    if finetune not in FINETUNES:
        raise MetanbError(f"unknown fine-tuning {finetune!r}; choose from {', '.join(FINETUNES)}")
    dataset = get_dataset(settings.dataset)
    tasks = make_tasks(*data, batch_size=settings.batch_size,
                       retrain_epochs=settings.retrain_epochs,
                       finetune_epochs=settings.finetune_epochs, seed=seed,
                       augment=dataset.augment)
    options = retrain_options(method, settings)
    steps = max(len(t) for t in tasks.retrain)  # every task seen retrain_epochs times
    if method == "reptile":
        steps = max(1, steps // settings.inner_steps)  # the same number of updates per task
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPMixer(settings.mixer())
    began = time.perf_counter()
    res = retrain(model, tasks.retrain, method=method, steps=steps, seed=seed, device=device,
                  checkpoint=checkpoint, progress=progress, inplace=True, **options)
    retrained, retrain_seconds = res.model, time.perf_counter() - began
    ft_steps = len(tasks.finetune)
    ft = {"steps": ft_steps, "lr": settings.finetune_lr, "seed": seed, "progress": progress,
          "weight_decay": settings.weight_decay, "device": device,
          "mixed_precision": settings.mixed_precision}
    began = time.perf_counter()
    if finetune == "lora":
        # PEFT reads a regex as matching containers too: name every Linear exactly
        tuned = finetune_lora(retrained, tasks.finetune, rank=settings.rank,
                              target_modules=linear_module_names(retrained),
                              alpha=float(settings.rank), **ft)
    else:
        tuned = finetune_head(retrained, tasks.finetune, head=HEAD, **ft)
    return {
        "method": method, "seed": seed, "finetune": finetune,
        "accuracy": evaluate_accuracy(tuned, tasks.test),
        "pretrained_accuracy": evaluate_accuracy(retrained, tasks.test),
        "retrain_loss": res.history[-1]["loss"], "retrain_steps": steps,
        "finetune_steps": ft_steps, "retrain_seconds": retrain_seconds,
        "finetune_seconds": time.perf_counter() - began,
    }
