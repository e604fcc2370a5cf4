"""Low-rank updates in closed form: the best rank-r fit (Eckart-Young), the floor it leaves, and
the finite-sample rate of fitting a rank-k update.

A rank-r *adapter* moves a base ``A`` to ``A + U Vᵀ`` (asymmetric LoRA) or ``A + U Uᵀ`` (the
symmetric, positive semi-definite update of the data model). For a residual ``R = M − A``:

- asymmetric: the best rank-r ``U Vᵀ`` is the truncated SVD of R; the error left is
  ``Σ_{i>r} σ_i(R)²`` (Eckart-Young {cite}`eckart1936approximation`).
- symmetric: split ``R = S + K`` (symmetric + skew). ``U Uᵀ`` cannot touch K, and the best PSD
  rank-r approximation of S keeps its r largest *positive* eigenvalues, so the error left is
  ``‖K‖_F² + Σ (eigenvalues of S not kept)²`` (all negative ones included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metanb.errors import MetanbError


@dataclass(frozen=True)
class Adapter:
    """A rank-r update ``U Vᵀ``; ``V is None`` means the symmetric update ``U Uᵀ``."""

    U: Tensor
    V: Tensor | None = None
    loss: float = math.nan  # the objective it was fitted with (population: ‖A + ΔW − M‖_F²)

    @property
    def symmetric(self) -> bool:
        return self.V is None

    @property
    def rank(self) -> int:
        return self.U.shape[-1]

    @property
    def delta(self) -> Tensor:
        """The update matrix ``U Vᵀ`` (or ``U Uᵀ``)."""
        V = self.U if self.V is None else self.V
        return self.U @ V.transpose(-1, -2)


def check_rank(rank: int, d: int) -> None:
    if rank < 1 or rank > d:
        raise MetanbError(f"rank must satisfy 1 <= rank <= d (d={d}), got rank={rank}")


def psd_factor(S: Tensor, rank: int) -> Tensor:
    """``U`` (d, rank) with ``U Uᵀ`` the best PSD rank-``rank`` approximation of symmetric ``S``."""
    evals, evecs = torch.linalg.eigh(S)  # ascending
    top = evals[..., -rank:].clamp(min=0)
    return evecs[..., -rank:] * top.sqrt().unsqueeze(-2)


def svd_factors(R: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(U, V)`` with ``U Vᵀ`` the truncated SVD of ``R`` (singular values split evenly)."""
    left, s, right_t = torch.linalg.svd(R)
    root = s[..., :rank].sqrt()
    return left[..., :rank] * root.unsqueeze(-2), right_t[..., :rank, :].transpose(-1, -2) * (
        root.unsqueeze(-2)
    )


def best_rank_r_fit(A: Tensor, M: Tensor, rank: int, symmetric: bool = True) -> Adapter:
    """The population-optimal rank-r adapter: ``argmin ‖A + ΔW − M‖_F²`` over rank-r ``ΔW``."""
    check_rank(rank, A.shape[-1])
    R = M - A
    if symmetric:
        U, V = psd_factor((R + R.transpose(-1, -2)) / 2, rank), None
    else:
        U, V = svd_factors(R, rank)
    adapter = Adapter(U, V)
    loss = ((A + adapter.delta - M) ** 2).sum((-1, -2))
    return Adapter(U, V, loss=float(loss) if loss.ndim == 0 else math.nan)


def sr_floor(A_base: Tensor, M_new: Tensor, rank: int, symmetric: bool = True) -> float:
    """The error no rank-r adapter on ``A_base`` can beat on task ``M_new``, from the spectrum.

    Named for its use on standard retraining's base ``A_star + mean_t U_t U_tᵀ``, where it is a
    constant that no amount of fine-tuning data removes; it applies to any base.
    """
    check_rank(rank, A_base.shape[-1])
    R = (M_new - A_base).to(torch.float64)
    if not symmetric:
        s = torch.linalg.svdvals(R)
        return float((s[rank:] ** 2).sum())
    S, K = (R + R.T) / 2, (R - R.T) / 2
    evals = torch.linalg.eigvalsh(S)  # ascending; U Uᵀ absorbs the top `rank` positive ones
    left = torch.cat([evals[:-rank], evals[-rank:].clamp(max=0)])
    return float((K**2).sum() + (left**2).sum())


def adapter_dim(d: int, k: int, symmetric: bool = True) -> int:
    """Degrees of freedom of a rank-k update: the dimension of the manifold it lives on.

    Symmetric ``U Uᵀ`` (U is d×k, defined up to a k×k rotation): ``d k − k(k−1)/2``.
    Asymmetric ``U Vᵀ`` (defined up to an invertible k×k matrix): ``k (2d − k)``.
    """
    return d * k - k * (k - 1) // 2 if symmetric else k * (2 * d - k)


def lora_ml_rate(d: int, k: int, n: float, sigma: float, symmetric: bool = True) -> float:
    """Predicted excess error of rank-k fine-tuning from the true base with n samples.

    To first order in 1/n, least squares on a smooth model manifold of dimension p has excess risk
    ``σ² p / n`` here (each sample gives d outputs with noise σ² and ``E[x xᵀ] = I``, so the Fisher
    information per matrix entry is n/σ²; the error is the noise projected on the p tangent
    directions). With ``p = adapter_dim(d, k)`` this is the ``k d / n`` rate of the paper.
    """
    if math.isinf(n):
        return 0.0
    return sigma**2 * adapter_dim(d, k, symmetric) / n
