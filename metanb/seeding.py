"""Seeding: every result in the book is reproducible from its recorded seed."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh torch CPU generator for explicit use.

    Prefer passing the returned generator to samplers over relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
