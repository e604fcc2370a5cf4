"""The ground truth of the linear theory: one shared base ``A_star`` and one rank-k shift per task.

Task t's matrix is ``M_t = A_star + U_star[t] @ U_star[t].T``. Entries of ``A_star`` and of every
``U_star[t]`` are i.i.d. N(0, 1/d): then ``A_star @ x`` has the scale of ``x`` (``‖A_star‖_F² ≈ d``)
and each column of ``U_star[t]`` has squared norm ≈ 1, so ``U_t U_tᵀ`` is close to a rank-k
projection (eigenvalues ≈ 1). Tasks are drawn one after another from one generator, so the first
T tasks of a ground truth with more tasks are the same matrices (figures over T stay comparable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metanb.errors import MetanbError
from metanb.seeding import derive_seed

DTYPE = torch.float64

SeedLike = int | torch.Generator


def as_generator(seed: SeedLike) -> torch.Generator:
    """A torch CPU generator from an int seed (or the generator itself, to continue its stream)."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def child_generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator for one named random stream of a run (``seed``, ``stream``).

    Separate streams (ground truth, retraining data, new task, fine-tuning data) mean that changing
    e.g. the fine-tuning sample size does not change the ground truth drawn from the same seed.
    """
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def check_dims(d: int, k: int, tasks: int | None = None) -> None:
    """Raise a one-line :class:`MetanbError` for impossible sizes."""
    if d < 1:
        raise MetanbError(f"d must be a positive integer, got {d}")
    if k < 1 or k > d:
        raise MetanbError(f"k must satisfy 1 <= k <= d (d={d}), got k={k}")
    if tasks is not None and tasks < 1:
        raise MetanbError(f"tasks must be at least 1, got {tasks}")


def draw_factors(d: int, k: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` low-rank factors (count, d, k) with i.i.d. N(0, 1/d) entries."""
    return torch.randn(count, d, k, generator=generator, dtype=DTYPE) / math.sqrt(d)


def task_matrices(A_star: Tensor, U: Tensor, V: Tensor | None = None) -> Tensor:
    """``M_t = A_star + U_t U_tᵀ`` (or ``A_star + U_t V_tᵀ``) for every task: shape (T, d, d)."""
    V = U if V is None else V
    return A_star + U @ V.transpose(-1, -2)


@dataclass(frozen=True)
class GroundTruth:
    """The base ``A_star`` (d, d) and the task factors ``U_star`` (T, d, k)."""

    A_star: Tensor
    U_star: Tensor

    @property
    def d(self) -> int:
        return self.A_star.shape[0]

    @property
    def k(self) -> int:
        return self.U_star.shape[-1]

    @property
    def tasks(self) -> int:
        return self.U_star.shape[0]

    def task_matrices(self) -> Tensor:
        """``(T, d, d)`` stack of ``A_star + U_t U_tᵀ``."""
        return task_matrices(self.A_star, self.U_star)

    def first(self, tasks: int) -> GroundTruth:
        """The same ground truth restricted to its first ``tasks`` tasks."""
        return GroundTruth(self.A_star, self.U_star[:tasks])


def make_ground_truth(d: int, k: int, tasks: int, seed: SeedLike = 0) -> GroundTruth:
    """Draw ``A_star`` then ``U_star[0], U_star[1], ...`` from one generator (see module doc)."""
    check_dims(d, k, tasks)
    gen = as_generator(seed)
    A_star = torch.randn(d, d, generator=gen, dtype=DTYPE) / math.sqrt(d)
    U_star = torch.cat([draw_factors(d, k, 1, gen) for _ in range(tasks)])
    return GroundTruth(A_star, U_star)


def sample_new_task(truth: GroundTruth, seed: SeedLike = 0) -> tuple[Tensor, Tensor]:
    """A fresh task from the same family: returns ``(M_new, U_new)``, ``M_new = A_star + U Uᵀ``."""
    U_new = draw_factors(truth.d, truth.k, 1, as_generator(seed))[0]
    return truth.A_star + U_new @ U_new.T, U_new
