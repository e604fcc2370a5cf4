"""Real images for the vision experiment: CIFAR-10 (binary version) and scikit-learn's digits.

CIFAR-10 comes from its *binary* archive, read here byte by byte: each record is 1 label byte
and 3,072 pixel bytes (1,024 red, then green, then blue, each row-major 32 x 32), 10,000
records per file. So no pickle (the "python version" is pickles) and no torchvision (it does
not install beside the CPU torch used here). The archive is fetched once with a pinned sha256
(:func:`metanb.data.download.fetch`) and its six batch files are extracted next to it.

Offline, :func:`load_digits` serves scikit-learn's 1,797 real 8 x 8 digit images (shipped
inside the package, no download) with a seeded, class-stratified train/test split, so the
same class-pair tasks run on CI.

Augmentation is the paper's (RandomCrop with zero padding + horizontal flip, then mean/std
normalisation), in plain torch on uint8 batches and driven by an explicit generator.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from metanb.errors import MetanbError
from metanb.seeding import derive_seed

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# sha256 of the published archive (170,052,171 bytes); its md5, the digest the CIFAR page
# publishes, is c32a1d4ab5d03f1284b67883e8d87530
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"  # the archive's root folder
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_RECORD = 1 + 3 * 32 * 32
# the normalisation of the official vision code (run_cifar.py)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W), class labels (N,), and how to make floats of them:
    pixel / ``scale`` in [0, 1], then per-channel (x - mean) / std."""

    images: torch.Tensor
    labels: torch.Tensor
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise MetanbError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise MetanbError(f"{self.images.shape[0]} images but labels of shape "
                              f"{tuple(self.labels.shape)}")
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise MetanbError(f"mean and std need one value per channel ({channels})")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (a long tensor or boolean mask), same normalisation."""
        return ImageSet(self.images[index], self.labels[index], self.scale, self.mean, self.std)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32, scaled and normalised per channel."""
        x = images.to(torch.float32) / self.scale
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def read_cifar_binary(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 binary batch file: (images uint8 (N, 3, 32, 32), labels long (N,)).

    A size that is not a whole number of records, or a label byte above 9, is a corrupt or
    truncated file: one line, never a half-read dataset.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MetanbError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data or len(data) % CIFAR10_RECORD:
        raise MetanbError(f"{path} is truncated or not a CIFAR-10 binary batch: {len(data)} bytes "
                          f"is not a whole number of {CIFAR10_RECORD}-byte records")
    records = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, CIFAR10_RECORD)
    labels = records[:, 0].long()
    if int(labels.max()) > 9:
        raise MetanbError(f"{path} is not a CIFAR-10 binary batch: label byte "
                          f"{int(labels.max())} > 9")
    return records[:, 1:].reshape(-1, *CIFAR10_SHAPE).clone(), labels


def download_cifar10(folder: str | Path, progress: bool = True, url: str = CIFAR10_URL,
                     sha256: str = CIFAR10_SHA256) -> Path:
    """The folder holding the six CIFAR-10 batch files, fetched (verified against ``sha256``)
    and extracted once; ``url`` may name a mirror (or a ``file://`` copy)."""
    from metanb.data.download import extract_tar_member, fetch

    folder = Path(folder)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        archive = fetch(url, folder / CIFAR10_ARCHIVE, sha256,
                        desc=CIFAR10_ARCHIVE, progress=progress)
        for name in missing:
            extract_tar_member(archive, f"{CIFAR10_FOLDER}/{name}", folder / name)
    return folder


def load_cifar10(folder: str | Path, download: bool = True, progress: bool = True
                 ) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 (train 50,000, test 10,000) from ``folder``; fetched there first unless
    ``download=False`` (then missing files are an error naming them)."""
    folder = Path(folder)
    if download:
        download_cifar10(folder, progress)

    def read(names: Sequence[str]) -> ImageSet:
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise MetanbError(f"{folder} lacks {', '.join(missing)}; download CIFAR-10 first "
                              "(download=True)")
        parts = [read_cifar_binary(folder / n) for n in names]
        return ImageSet(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                        255.0, CIFAR10_MEAN, CIFAR10_STD)

    return read(CIFAR10_TRAIN_FILES), read((CIFAR10_TEST_FILE,))


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (uint8 (1797, 1, 8, 8), labels), read once per process."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ModuleNotFoundError:
        raise MetanbError("the digits need scikit-learn: pip install 'metanb[book]' (or "
                          "scikit-learn>=1.3)") from None
    raw = sklearn_digits()
    images = torch.as_tensor(raw.images).round().to(torch.uint8).unsqueeze(1)
    return images, torch.as_tensor(raw.target).long()


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 8 x 8 digits (pixels 0..16) split per class into train and test
    (``test_fraction`` of every class, seeded); normalised by the train split's mean/std."""
    if not 0 < test_fraction < 1:
        raise MetanbError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _digits()
    g = torch.Generator().manual_seed(derive_seed(seed, "digits", "split"))
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        test[members[: max(1, round(test_fraction * len(members)))]] = True
    x = images[~test].float() / 16.0
    mean, std = (float(x.mean()),), (float(x.std()),)
    full = ImageSet(images, labels, 16.0, mean, std)
    return full.subset(~test), full.subset(test)


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool,
                     generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding, zero fill) then RandomHorizontalFlip(0.5), one draw per
    image, on a (B, C, H, W) batch of any dtype."""
    b, _, h, w = images.shape
    out = images
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b)[:, None, None, None]
        chans = torch.arange(images.shape[1])[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out
