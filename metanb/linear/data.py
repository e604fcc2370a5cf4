"""Samples and their sufficient statistics.

A sample of task t is ``x ~ N(0, I_d)``, ``y = M_t x + ε`` with ``ε ~ N(0, σ² I_d)``. Every loss in
the linear theory is a quadratic in the model matrix B, so it only needs three moments of the data:

    risk(B) = E‖y − B x‖² = yy − 2 tr(B · xy) + tr(B · xx · Bᵀ),
    xx = E[x xᵀ],  xy = E[x yᵀ],  yy = E[‖y‖²].

With n samples the expectations are averages over the samples (empirical risk); with n = ∞ they are
the population values xx = I, xy = Mᵀ and we set yy = ‖M‖_F², which drops the constant noise term
d σ²: then risk(B) = ‖B − M‖_F², the population excess risk. One code path serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metanb.errors import MetanbError
from metanb.linear.ground_truth import DTYPE, SeedLike, as_generator


@dataclass(frozen=True)
class TaskData:
    """Samples of one or several tasks: ``X`` and ``Y`` have shape (..., n, d)."""

    X: Tensor
    Y: Tensor

    @property
    def n(self) -> int:
        return self.X.shape[-2]


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics ``xx`` (..., d, d), ``xy`` (..., d, d), ``yy`` (...) of some tasks."""

    xx: Tensor
    xy: Tensor
    yy: Tensor
    n: float  # samples per task; math.inf for the population

    @property
    def population(self) -> bool:
        return math.isinf(self.n)


DataOrMatrix = Tensor | TaskData | Moments


def check_samples(n: float, name: str = "samples") -> None:
    """Sample counts are positive integers or ``inf``."""
    if not (math.isinf(n) and n > 0) and not (float(n).is_integer() and n >= 1):
        raise MetanbError(f"{name} must be a positive integer or inf, got {n}")


def sample_task_data(M: Tensor, n: int, sigma: float, generator: SeedLike = 0) -> TaskData:
    """``n`` samples ``y = M x + σ ε`` of each task in ``M`` ((d, d) or (T, d, d))."""
    check_samples(n)
    if math.isinf(n):
        raise MetanbError("cannot draw infinitely many samples; pass the matrix M itself for n=inf")
    if sigma < 0:
        raise MetanbError(f"sigma must be >= 0, got {sigma}")
    gen = as_generator(generator)
    shape = (*M.shape[:-2], int(n), M.shape[-1])
    X = torch.randn(shape, generator=gen, dtype=DTYPE)
    noise = torch.randn(shape, generator=gen, dtype=DTYPE)
    return TaskData(X=X, Y=X @ M.transpose(-1, -2) + sigma * noise)


def population_moments(M: Tensor) -> Moments:
    """Moments for which ``risk(B) = ‖B − M‖_F²`` exactly (the n = ∞ limit minus the noise)."""
    eye = torch.eye(M.shape[-1], dtype=M.dtype).expand(M.shape)
    return Moments(xx=eye, xy=M.transpose(-1, -2), yy=(M**2).sum((-1, -2)), n=math.inf)


def empirical_moments(data: TaskData) -> Moments:
    """Sample averages of ``x xᵀ``, ``x yᵀ`` and ``‖y‖²``."""
    n = data.n
    Xt = data.X.transpose(-1, -2)
    return Moments(xx=Xt @ data.X / n, xy=Xt @ data.Y / n, yy=(data.Y**2).sum((-1, -2)) / n, n=n)


def as_moments(data_or_M: DataOrMatrix) -> Moments:
    """Accept task matrices (population), samples, or ready moments."""
    if isinstance(data_or_M, Moments):
        return data_or_M
    if isinstance(data_or_M, TaskData):
        return empirical_moments(data_or_M)
    if isinstance(data_or_M, Tensor):
        return population_moments(data_or_M.to(DTYPE))
    raise MetanbError(
        f"expected task matrices (Tensor), TaskData or Moments, got {type(data_or_M).__name__}"
    )


def risk(B: Tensor, m: Moments) -> Tensor:
    """``E‖y − B x‖²`` per task from the moments (population: ``‖B − M‖_F²``)."""
    if m.population:
        # the same quadratic, summed without the cancellation of yy − 2 cross + quad, so that
        # losses near zero (exact recovery) keep full float64 precision
        return ((B - m.xy.transpose(-1, -2)) ** 2).sum((-1, -2))
    cross = (B * m.xy.transpose(-1, -2)).sum((-1, -2))  # tr(B · xy)
    quad = ((B @ m.xx) * B).sum((-1, -2))  # tr(B · xx · Bᵀ)
    return m.yy - 2 * cross + quad


def risk_grad(B: Tensor, m: Moments) -> Tensor:
    """``∂ risk / ∂B = 2 (B · xx − xyᵀ)``."""
    return 2 * (B @ m.xx - m.xy.transpose(-1, -2))


def population_excess_error(M_hat: Tensor, M: Tensor) -> float | Tensor:
    """``E‖(M_hat − M) x‖² = ‖M_hat − M‖_F²`` for ``x ~ N(0, I)`` (a float, or one per task)."""
    err = ((M_hat - M) ** 2).sum((-1, -2))
    return float(err) if err.ndim == 0 else err
