"""Seeding: every result in the book is reproducible from its recorded seed.

One rule derives every random stream: :func:`derive_seed` (``numpy.random.SeedSequence`` over
the run seed and the stream's keys), so streams never collide (``seed + i`` arithmetic makes run
seed 1 / task 0 equal run seed 0 / task 1) and adding a stream never shifts another.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

SeedKey = int | str


def derive_seed(seed: int, *keys: SeedKey) -> int:
    """A 64-bit seed for the stream named by ``keys`` under run seed ``seed``.

    Strings are hashed with CRC-32 (stable across processes, unlike ``hash``).
    """
    words = [int(seed) % 2**32] + [
        zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k) % 2**32 for k in keys]
    state = np.random.SeedSequence(words).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh torch CPU generator for explicit use.

    Prefer passing the returned generator to samplers over relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
