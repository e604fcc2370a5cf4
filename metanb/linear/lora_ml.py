"""LoRA-ML: retrain the base together with one rank-r adapter per retraining task.

Objective (population: ``risk_t(B) = ‖B − M_t‖_F²``; finite n: the empirical risk)

    L(A, U_1..U_T) = (1/T) Σ_t risk_t(A + U_t U_tᵀ)        (symmetric, the default)
    L(A, U, V)     = (1/T) Σ_t risk_t(A + U_t V_tᵀ)        (asymmetric LoRA)

With ``G_t = ∂risk_t/∂B = 2 (B_t xx_t − xy_tᵀ)`` at ``B_t = A + U_t U_tᵀ`` the gradients are
``∂L/∂A = (1/T) Σ_t G_t``, ``∂L/∂U_t = (1/T)(G_t + G_tᵀ) U_t`` (symmetric) or
``∂L/∂U_t = (1/T) G_t V_t``, ``∂L/∂V_t = (1/T) G_tᵀ U_t`` (asymmetric). The adapters are discarded
afterwards; the base ``A`` is what is kept.

Initialisation:
- ``"spectral"`` (default): ``A`` = standard retraining's solution; ``U_t`` (and ``V_t``) = the best
  rank-r fit of task t's residual from that base, plus ``init_noise`` · N(0, 1/d) entries (a zero
  column of a symmetric factor would get zero gradient forever, so we never start exactly there).
- ``"random"``: ``A`` and every factor have i.i.d. N(0, 1/d) entries (different seeds reach
  different global minima when the minimiser is not unique, e.g. T = 2).
Stopping rule: :mod:`metanb.linear.optim`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metanb.errors import MetanbError
from metanb.linear.data import DataOrMatrix, Moments, as_moments, risk, risk_grad
from metanb.linear.ground_truth import SeedLike, as_generator
from metanb.linear.lowrank import check_rank, psd_factor, svd_factors
from metanb.linear.optim import minimise, single_threaded
from metanb.linear.standard import standard_retraining

INITS = ("spectral", "random")


@dataclass
class LoraMLResult:
    """Retrained base ``A`` (d, d), adapters ``U`` (T, d, r) and ``V`` (None if symmetric)."""

    A: Tensor
    U: Tensor
    V: Tensor | None
    loss: float
    history: list[float] = field(default_factory=list)  # loss at every function evaluation

    @property
    def task_matrices(self) -> Tensor:
        """``A + U_t U_tᵀ`` (or ``A + U_t V_tᵀ``) per task."""
        V = self.U if self.V is None else self.V
        return self.A + self.U @ V.transpose(-1, -2)


def residual_cross(A: Tensor, m: Moments) -> Tensor:
    """``xy_tᵀ − A xx_t``: the residual each task leaves after base A (= M_t − A in population)."""
    return m.xy.transpose(-1, -2) - A @ m.xx


def lora_ml_objective(m: Moments, symmetric: bool):
    """``params -> (L, grads)`` for the LoRA-ML objective above (params: A, U[, V])."""

    def loss_and_grads(params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        A, U = params[0], params[1]
        V = U if symmetric else params[2]
        B = A + U @ V.transpose(-1, -2)  # (T, d, d)
        T = B.shape[0]
        G = risk_grad(B, m) / T
        loss = risk(B, m).mean()
        if symmetric:
            return loss, [G.sum(0), (G + G.transpose(-1, -2)) @ U]
        return loss, [G.sum(0), G @ V, G.transpose(-1, -2) @ U]

    return loss_and_grads


def _initial_point(
    m: Moments, rank: int, symmetric: bool, init: str, gen: torch.Generator, init_noise: float
) -> list[Tensor]:
    T, d = m.xy.shape[0], m.xy.shape[-1]
    scale = 1 / math.sqrt(d)
    noise = [torch.randn(T, d, rank, generator=gen, dtype=m.xy.dtype) * scale for _ in range(2)]
    if init == "random":
        A = torch.randn(d, d, generator=gen, dtype=m.xy.dtype) * scale
        return [A, noise[0]] if symmetric else [A, noise[0], noise[1]]
    A = standard_retraining(m)
    R = residual_cross(A, m)
    if symmetric:
        return [A, psd_factor((R + R.transpose(-1, -2)) / 2, rank) + init_noise * noise[0]]
    U, V = svd_factors(R, rank)
    return [A, U + init_noise * noise[0], V + init_noise * noise[1]]


@single_threaded()
def lora_ml(
    data_or_M: DataOrMatrix,
    rank: int,
    *,
    symmetric: bool = True,
    init: str = "spectral",
    seed: SeedLike = 0,
    init_noise: float = 1e-3,
    max_iter: int = 2000,
    tol_grad: float = 1e-10,
) -> LoraMLResult:
    """Minimise the LoRA-ML objective jointly over ``A`` and all adapters (float64, L-BFGS).

    ``data_or_M``: task matrices (T, d, d) for the population objective (n = ∞), or samples
    (:class:`TaskData` with X, Y of shape (T, n, d)) for the empirical one.
    """
    m = as_moments(data_or_M)
    if m.xy.ndim != 3:
        raise MetanbError("lora_ml needs a stack of tasks: matrices (T, d, d) or data (T, n, d)")
    check_rank(rank, m.xy.shape[-1])
    if init not in INITS:
        raise MetanbError(f"init must be one of {INITS}, got {init!r}")
    start = _initial_point(m, rank, symmetric, init, as_generator(seed), init_noise)
    objective = lora_ml_objective(m, symmetric)
    params, history = minimise(start, objective, max_iter=max_iter, tol_grad=tol_grad)
    return LoraMLResult(
        A=params[0],
        U=params[1],
        V=None if symmetric else params[2],
        loss=float(objective(params)[0]),
        history=history,
    )
