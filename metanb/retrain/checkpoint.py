"""Checkpoints: everything a run needs to continue, written by the main process only.

One file holds the model (with its adapters), optimiser, schedule, gradient scaler, stream
positions and history. No RNG state is needed: the loop reseeds every step from (seed, process,
step), so a resumed run draws what the uninterrupted one would. The file is written atomically
(:mod:`metanb.io`: a unique temporary name, fsync, rename), read with ``weights_only=True``,
and refused with one line when it belongs to another run (config, tasks or format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError
from metanb.io import atomic_save_torch, load_torch
from metanb.retrain.config import RetrainConfig

CHECKPOINT_FORMAT = 2


@dataclass
class Checkpoint:
    """Where and how often a run saves itself."""

    path: Path
    every: int = 50

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.every < 1:
            raise MetanbError(f"checkpoint_every must be at least 1, got {self.every}")

    def due(self, done: int, total: int) -> bool:
        return done % self.every == 0 or done == total

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (call on the main process only)."""
        atomic_save_torch(self.path, {"format": CHECKPOINT_FORMAT, **state})

    def load(self, config: RetrainConfig, num_tasks: int) -> dict[str, Any] | None:
        """The saved state of this run, None if there is none yet."""
        if not self.path.exists():
            return None
        state = load_torch(self.path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise MetanbError(f"checkpoint {self.path} has another format (not "
                              f"{CHECKPOINT_FORMAT}); delete it or pass another checkpoint path")
        saved, ours = state.get("config", {}), config.identity()
        diff = {k: (saved.get(k), v) for k, v in ours.items() if saved.get(k) != v}
        if diff or state.get("num_tasks") != num_tasks:
            what = ", ".join(f"{k}: {a!r} there vs {b!r} here" for k, (a, b) in diff.items())
            raise MetanbError(
                f"checkpoint {self.path} belongs to another run "
                f"({what or 'another number of tasks'}); delete it or pass another path")
        return state
