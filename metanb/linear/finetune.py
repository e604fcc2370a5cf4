"""Fine-tuning a rank-r adapter on a new task, from a fixed base ``A``.

- n = ∞ (a task matrix ``M`` is given): the population optimum, :func:`best_rank_r_fit`.
- asymmetric ``U Vᵀ`` from samples: reduced-rank regression, in closed form. With the residual
  target ``ỹ = y − A x``, ordinary least squares gives ``B_ols = xỹᵀ xx⁻¹``; the best rank-r
  ``B`` for the empirical risk projects it on the top-r eigenvectors ``P_r`` of the fitted-value
  covariance ``B_ols xx B_olsᵀ``: ``B = P_r P_rᵀ B_ols`` (minimum-norm least squares for n < d).
  Being the exact empirical minimiser, it inherits least squares' large error when n ≈ d.
- symmetric ``U Uᵀ`` from samples: no closed form; L-BFGS on U (stopping rule in
  :mod:`metanb.linear.optim`) from the best PSD rank-r fit of the moment estimate ``xỹᵀ`` of the
  residual (unbiased because ``E[x xᵀ] = I``, and unlike least squares it does not blow up when
  n ≈ d). With fewer samples than dimensions (n < d) the empirical risk has directions no sample
  sees, along which ``U`` can grow without bound at a falling loss; there we return that (bounded)
  spectral estimate itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metanb.linear.data import DataOrMatrix, Moments, as_moments, risk, risk_grad
from metanb.linear.ground_truth import SeedLike, as_generator
from metanb.linear.lowrank import Adapter, best_rank_r_fit, check_rank, psd_factor
from metanb.linear.optim import minimise, single_threaded


def residual_moments(A: Tensor, m: Moments) -> Moments:
    """Moments of ``(x, ỹ = y − A x)``: fine-tuning fits ``ΔW`` to the residual of the base."""
    xy = m.xy - m.xx @ A.T
    yy = risk(A, m)
    return Moments(xx=m.xx, xy=xy, yy=yy, n=m.n)


def ols(m: Moments) -> Tensor:
    """Least squares ``B_ols = xyᵀ xx⁻¹`` (minimum norm when n < d)."""
    return torch.linalg.lstsq(m.xx, m.xy, driver="gelsd").solution.T


def reduced_rank_regression(m: Moments, rank: int) -> Adapter:
    """The rank-r minimiser of the empirical risk (closed form, see module doc)."""
    B_ols = ols(m)
    _, evecs = torch.linalg.eigh(B_ols @ m.xx @ B_ols.T)
    P = evecs[:, -rank:]
    return Adapter(U=P, V=B_ols.T @ P, loss=float(risk(P @ P.T @ B_ols, m)))


def symmetric_adapter_gd(
    m: Moments, rank: int, generator: torch.Generator, init_noise: float = 1e-3,
    max_iter: int = 2000,
) -> Adapter:
    """Minimise ``risk(U Uᵀ)`` over U with L-BFGS from a spectral start."""
    d = m.xx.shape[-1]
    U0 = psd_factor((m.xy + m.xy.T) / 2, rank)  # moment estimate of sym(residual)
    if m.n < d:  # under-determined: see the module docstring
        return Adapter(U=U0, loss=float(risk(U0 @ U0.T, m)))
    U0 = U0 + init_noise * torch.randn(U0.shape, generator=generator, dtype=U0.dtype) / math.sqrt(d)

    def loss_and_grads(params):
        (U,) = params
        B = U @ U.T
        G = risk_grad(B, m)
        return risk(B, m), [(G + G.T) @ U]

    (U,), _ = minimise([U0], loss_and_grads, max_iter=max_iter)
    return Adapter(U=U, loss=float(risk(U @ U.T, m)))


@single_threaded()
def finetune_adapter(
    A: Tensor, data_or_M: DataOrMatrix, rank: int, symmetric: bool = True, *, seed: SeedLike = 0
) -> Adapter:
    """Fit a rank-r adapter to one new task on top of the frozen base ``A``.

    ``data_or_M``: the task matrix (d, d) for n = ∞, or :class:`TaskData` with X, Y (n, d).
    The returned adapter's ``.delta`` is the update; ``A + adapter.delta`` is the tuned model.
    """
    check_rank(rank, A.shape[-1])
    if isinstance(data_or_M, Tensor):
        return best_rank_r_fit(A, data_or_M, rank, symmetric=symmetric)
    m = residual_moments(A, as_moments(data_or_M))
    if symmetric:
        return symmetric_adapter_gd(m, rank, as_generator(seed))
    return reduced_rank_regression(m, rank)
