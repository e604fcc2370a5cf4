"""CIFAR-10's binary format (on files written here), its download's checksum, the digits, and
the paper's augmentation."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from metanb.data.download import sha256_file
from metanb.data.images import (
    CIFAR10_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_RECORD,
    CIFAR10_SHA256,
    CIFAR10_STD,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    download_cifar10,
    load_cifar10,
    load_digits,
    random_crop_flip,
    read_cifar_binary,
)
from metanb.errors import MetanbError


def cifar_records(labels: list[int], seed: int = 0) -> tuple[bytes, torch.Tensor]:
    """Binary records (label byte + 1024 R + 1024 G + 1024 B, row-major) and the images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    data = b"".join(bytes([y]) + images[i].numpy().tobytes() for i, y in enumerate(labels))
    return data, images


def test_reader_decodes_labels_and_channel_planes(tmp_path: Path):
    data, images = cifar_records([3, 9, 0])
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(data)
    got, labels = read_cifar_binary(path)
    assert labels.tolist() == [3, 9, 0]
    assert got.dtype == torch.uint8 and got.shape == (3, 3, 32, 32)
    assert torch.equal(got, images)
    # the second record's green plane starts 1 + 1024 bytes into it
    assert got[1, 1, 0, 0].item() == data[CIFAR10_RECORD + 1 + 1024]


def test_truncated_or_foreign_files_are_one_line_errors(tmp_path: Path):
    data, _ = cifar_records([1, 2])
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:-5])
    with pytest.raises(MetanbError, match=r"cut.bin is truncated or not a CIFAR-10 binary "
                       r"batch: 6141 bytes is not a whole number of 3073-byte records"):
        read_cifar_binary(cut)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes([12]) + data[1:CIFAR10_RECORD])
    with pytest.raises(MetanbError, match="label byte 12 > 9"):
        read_cifar_binary(bad)
    with pytest.raises(MetanbError, match="cannot read .*missing.bin"):
        read_cifar_binary(tmp_path / "missing.bin")


def fake_archive(path: Path, per_file: int = 4) -> dict[str, torch.Tensor]:
    """A cifar-10-binary.tar.gz with six small batch files; returns each file's labels."""
    out = {}
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
            labels = [(i + j) % 10 for j in range(per_file)]
            data, _ = cifar_records(labels, seed=i)
            info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            out[name] = torch.tensor(labels)
    return out


def test_download_extracts_verified_archive_and_loads(tmp_path: Path):
    archive = tmp_path / "mirror.tar.gz"
    labels = fake_archive(archive)
    folder = download_cifar10(tmp_path / "cache", progress=False, url=archive.as_uri(),
                              sha256=sha256_file(archive))
    assert sorted(p.name for p in folder.glob("*.bin")) == sorted(labels)
    train, test = load_cifar10(folder, download=False)
    assert len(train) == 20 and len(test) == 4
    assert torch.equal(train.labels, torch.cat([labels[n] for n in CIFAR10_TRAIN_FILES]))
    assert (train.mean, train.std, train.scale) == (CIFAR10_MEAN, CIFAR10_STD, 255.0)


def test_download_refuses_a_file_with_the_wrong_checksum(tmp_path: Path):
    wrong = tmp_path / "not-cifar.tar.gz"
    fake_archive(wrong)
    cache = tmp_path / "cache"
    with pytest.raises(MetanbError, match=f"expected {CIFAR10_SHA256}; the file was not kept"):
        download_cifar10(cache, progress=False, url=wrong.as_uri())  # the pinned digest
    assert not cache.exists() or not any(cache.iterdir())
    with pytest.raises(MetanbError, match="lacks data_batch_1.bin"):
        load_cifar10(cache, download=False)


def test_pinned_digest_is_a_sha256():
    assert len(CIFAR10_SHA256) == 64 and int(CIFAR10_SHA256, 16) >= 0


def test_digits_split_is_stratified_disjoint_and_seeded():
    pytest.importorskip("sklearn")
    train, test = load_digits(test_fraction=0.25, seed=0)
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 16
    for c in range(10):
        n_test, n_all = int((test.labels == c).sum()), int((train.labels == c).sum()
                                                           + (test.labels == c).sum())
        assert n_test == round(0.25 * n_all)
    x = train.normalize(train.images)
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)
    again, _ = load_digits(test_fraction=0.25, seed=0)
    assert torch.equal(again.images, train.images)
    other, _ = load_digits(test_fraction=0.25, seed=1)
    assert not torch.equal(other.images, train.images)


def test_random_crop_flip_is_a_shifted_window_of_the_zero_padded_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 6, 6), generator=g, dtype=torch.uint8)
    out = random_crop_flip(images, padding=2, flip=True, generator=g)
    padded = torch.nn.functional.pad(images, (2,) * 4)
    shifts, flips = set(), 0
    for i in range(len(images)):
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(
                     padded[i, :, dy:dy + 6, dx:dx + 6]))]
        assert found, f"image {i} is no crop of its padded image"
        shifts.add(found[0][:2])
        flips += found[0][2]
    assert len(shifts) > 10 and 16 < flips < 48  # offsets spread, about half flipped
    same = random_crop_flip(images, padding=0, flip=False, generator=g)
    assert torch.equal(same, images)
