"""The T = 2 family of LoRA-ML minimisers: why two tasks do not identify ``A_star``.

Zero loss with two tasks means ``A + U_t U_tᵀ = M_t`` for t = 1, 2, i.e.
``U_1 U_1ᵀ − U_2 U_2ᵀ = D := U_1* U_1*ᵀ − U_2* U_2*ᵀ`` and ``A = M_1 − U_1 U_1ᵀ``. Writing
``W = [U_1, U_2]`` (d × 2k) and ``J = diag(I_k, −I_k)``, the condition is ``W J Wᵀ = W* J W*ᵀ``:
every ``W = W* L`` with ``L J Lᵀ = J`` (L in the indefinite orthogonal group O(k, k)) is a global
minimiser. Rotations inside O(k) × O(k) leave A unchanged, but hyperbolic "boosts" do not, e.g.

    U_1(θ) = cosh θ U_1* + sinh θ U_2*,   U_2(θ) = sinh θ U_1* + cosh θ U_2*,
    A(θ)   = A_star + U_1* U_1*ᵀ − U_1(θ) U_1(θ)ᵀ,

a curve of exact minimisers through ``A(0) = A_star``. A third generic task breaks the symmetry.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def two_task_family(A_star: Tensor, U_star: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """The boost-θ minimiser ``(A(θ), U(θ))`` of the T = 2 LoRA-ML objective (U_star: 2×d×k)."""
    c, s = math.cosh(theta), math.sinh(theta)
    U1, U2 = U_star[0], U_star[1]
    U = torch.stack([c * U1 + s * U2, s * U1 + c * U2])
    return A_star + U1 @ U1.T - U[0] @ U[0].T, U


def lorentz_coordinates(U_star: Tensor, U: Tensor) -> tuple[Tensor, float]:
    """Least-squares ``L`` with ``[U_1, U_2] ≈ [U_1*, U_2*] L`` and the fit's relative residual.

    A LoRA-ML minimiser for T = 2 lies on the family iff the residual is ≈ 0 and
    ``L J Lᵀ = J`` (see :func:`lorentz_defect`).
    """
    W_star, W = torch.cat(list(U_star), dim=1), torch.cat(list(U), dim=1)
    L = torch.linalg.lstsq(W_star, W).solution
    return L, float((W_star @ L - W).norm() / W.norm())


def lorentz_defect(L: Tensor) -> float:
    """``‖L J Lᵀ − J‖_F`` with ``J = diag(I_k, −I_k)``: zero iff L is in O(k, k)."""
    k = L.shape[0] // 2
    J = torch.diag(torch.cat([torch.ones(k), -torch.ones(k)])).to(L.dtype)
    return float((L @ J @ L.T - J).norm())


def boost_angle(L: Tensor) -> float:
    """θ of a k = 1 minimiser: ``U_1 = ±(cosh θ U_1* + sinh θ U_2*)``."""
    first = L[:, 0] * torch.sign(L[0, 0])
    return float(torch.asinh(first[1]))
