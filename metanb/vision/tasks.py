"""Class-pair tasks of the vision experiment, and the batches ``retrain`` and ``finetune`` take.

The paper's split: retraining tasks 0/1, 2/3, 4/5, 6/7 and the unseen task 8/9, each binary
with label = class % 2 (so one head of 2 classes serves every task). A task's training batches
are a :class:`TaskBatches` sequence: batch i is built on demand from (seed, task, i) alone
(shuffled epochs, fresh augmentation every epoch), so a run is reproducible and a resumed run
sees exactly the batches the uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from metanb.data.images import ImageSet, load_cifar10, load_digits, random_crop_flip
from metanb.errors import MetanbError
from metanb.seeding import derive_seed
from metanb.vision.mixer import DIGITS_MIXER, MixerConfig

Pair = tuple[int, int]
Batch = dict[str, torch.Tensor]
RETRAIN_PAIRS: tuple[Pair, ...] = ((0, 1), (2, 3), (4, 5), (6, 7))
UNSEEN_PAIR: Pair = (8, 9)


@dataclass(frozen=True)
class Augment:
    """RandomCrop zero padding (0 = none) and whether to flip horizontally at random."""

    padding: int = 4
    flip: bool = True


def check_pairs(pairs: Sequence[Pair], unseen: Pair) -> None:
    """Each pair one even and one odd class (label = class % 2 must give 0 and 1), no class in
    two tasks, the unseen pair in none of the retraining ones."""
    seen: set[int] = set()
    for pair in (*pairs, unseen):
        if len(pair) != 2 or {c % 2 for c in pair} != {0, 1}:
            raise MetanbError(f"class pair {pair} needs one even and one odd class (label = "
                              "class % 2)")
        if seen & set(pair):
            raise MetanbError(f"class pair {pair} shares a class with another task")
        seen |= set(pair)


def pair_task(data: ImageSet, pair: Pair) -> ImageSet:
    """The images of the two classes of ``pair``, relabelled class % 2."""
    keep = (data.labels == pair[0]) | (data.labels == pair[1])
    task = data.subset(keep)
    if len(task) == 0:
        raise MetanbError(f"no images of classes {pair} in this data set")
    return ImageSet(task.images, task.labels % 2, task.scale, task.mean, task.std)


class TaskBatches(Sequence):
    """``epochs`` shuffled passes over one task in batches of ``batch_size`` (the last one of an
    epoch may be smaller), augmented; batch i depends only on (seed, key, i)."""

    def __init__(self, data: ImageSet, batch_size: int, epochs: int, seed: int, key: str,
                 augment: Augment | None = None) -> None:
        if batch_size < 1 or epochs < 1:
            raise MetanbError(f"batch_size and epochs must be >= 1, got {batch_size}, {epochs}")
        self.data, self.batch_size, self.epochs = data, batch_size, epochs
        self.seed, self.key, self.augment = seed, key, augment
        self.per_epoch = -(-len(data) // batch_size)
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation)

    def __len__(self) -> int:
        return self.epochs * self.per_epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.key, "epoch", epoch))
            self._order = (epoch, torch.randperm(len(self.data), generator=g))
        return self._order[1]

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        epoch, j = divmod(index, self.per_epoch)
        rows = self._permutation(epoch)[j * self.batch_size:(j + 1) * self.batch_size]
        images = self.data.images[rows]
        if self.augment is not None:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.key, "augment", index))
            images = random_crop_flip(images, self.augment.padding, self.augment.flip, g)
        return {"pixel_values": self.data.normalize(images), "labels": self.data.labels[rows]}


def eval_batches(data: ImageSet, batch_size: int = 500) -> list[Batch]:
    """Every image once, in order, unaugmented (what accuracy is measured on)."""
    return [{"pixel_values": data.normalize(data.images[i:i + batch_size]),
             "labels": data.labels[i:i + batch_size]} for i in range(0, len(data), batch_size)]


@dataclass(frozen=True)
class VisionTasks:
    """Everything one seed of the experiment trains and scores on."""

    retrain: list[TaskBatches]  # one per retraining pair (what retrain() takes)
    finetune: TaskBatches  # the unseen pair's training images
    test: list[Batch]  # the unseen pair's test images
    retrain_test: list[list[Batch]]  # each retraining pair's test images (diagnostics)


def make_tasks(train: ImageSet, test: ImageSet, *, batch_size: int, retrain_epochs: int,
               finetune_epochs: int, seed: int, augment: Augment | None,
               pairs: Sequence[Pair] = RETRAIN_PAIRS, unseen: Pair = UNSEEN_PAIR) -> VisionTasks:
    """The retraining tasks and the unseen task of one seed, from a train and a test split."""
    check_pairs(pairs, unseen)

    def batches(pair: Pair, epochs: int) -> TaskBatches:
        return TaskBatches(pair_task(train, pair), batch_size, epochs, seed,
                           f"pair-{pair[0]}-{pair[1]}", augment)

    return VisionTasks(
        retrain=[batches(p, retrain_epochs) for p in pairs],
        finetune=batches(unseen, finetune_epochs),
        test=eval_batches(pair_task(test, unseen)),
        retrain_test=[eval_batches(pair_task(test, p)) for p in pairs])


@dataclass(frozen=True)
class VisionDataset:
    """A data source of the experiment: how to load it, its augmentation, its model size."""

    name: str
    load: Callable[[Path | None, bool], tuple[ImageSet, ImageSet]]
    augment: Augment
    mixer: MixerConfig


def _cifar(folder: Path | None, progress: bool) -> tuple[ImageSet, ImageSet]:
    if folder is None:
        raise MetanbError("CIFAR-10 needs a data folder (it is downloaded there once)")
    return load_cifar10(folder, download=True, progress=progress)


def _digits(folder: Path | None, progress: bool) -> tuple[ImageSet, ImageSet]:
    return load_digits()


DATASETS: dict[str, VisionDataset] = {
    # the paper: RandomCrop(32, padding 4) + horizontal flip, the official Mixer
    "cifar10": VisionDataset("cifar10", _cifar, Augment(4, True), MixerConfig()),
    # 8 x 8 digits: a 1-pixel shift only (a mirrored 2 or 3 is no longer that digit)
    "digits": VisionDataset("digits", _digits, Augment(1, False), DIGITS_MIXER),
}


def get_dataset(name: str) -> VisionDataset:
    if name not in DATASETS:
        raise MetanbError(f"unknown vision data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]
