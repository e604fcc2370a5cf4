"""Standard retraining (SR): fit one matrix ``A`` to the union of the T tasks.

SR minimises ``(1/T) Σ_t risk_t(A)``. The risk is quadratic, so setting its gradient
``(2/T) Σ_t (A xx_t − xy_tᵀ)`` to zero gives pooled least squares:

    A_SR = (Σ_t xy_tᵀ) (Σ_t xx_t)⁻¹,

which in the population (xx_t = I, xy_t = M_tᵀ) is the average task matrix
``A_star + (1/T) Σ_t U_t U_tᵀ`` (:func:`sr_limit`): a shift of A_star of rank up to T k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from metanb.linear.data import DataOrMatrix, as_moments, risk, risk_grad
from metanb.linear.optim import single_threaded


def sr_limit(A_star: Tensor, U_star: Tensor) -> Tensor:
    """SR's population solution ``A_star + (1/T) Σ_t U_t U_tᵀ``."""
    return A_star + (U_star @ U_star.transpose(-1, -2)).mean(0)


@single_threaded()
def standard_retraining(data_or_M: DataOrMatrix) -> Tensor:
    """SR in closed form (pooled least squares; minimum-norm solution if under-determined)."""
    m = as_moments(data_or_M)
    xx, xy = m.xx.sum(0), m.xy.sum(0)
    # A xx = xyᵀ  <=>  xx Aᵀ = xy  (xx is symmetric)
    return torch.linalg.lstsq(xx, xy, driver="gelsd").solution.T.contiguous()


@dataclass
class SRResult:
    """SR fitted by gradient descent: base ``A``, final mean loss, loss after each step."""

    A: Tensor
    loss: float
    history: list[float] = field(default_factory=list)


def standard_retraining_gd(
    data_or_M: DataOrMatrix, lr: float | None = None, tol: float = 1e-10, max_iter: int = 10_000
) -> SRResult:
    """SR by plain gradient descent on ``(1/T) Σ_t risk_t(A)`` from ``A = 0``.

    The default step ``1 / λ_max(mean_t xx_t)`` is ``1/L`` for this L-smooth quadratic (L = 2
    λ_max, halved because we step along half the gradient), so the iteration contracts; it stops
    when ``‖∇‖_F ≤ tol · max(1, ‖∇ at A = 0‖_F)`` or after ``max_iter`` steps.
    """
    m = as_moments(data_or_M)
    xx_mean = m.xx.mean(0)
    step = lr if lr is not None else 1.0 / float(torch.linalg.eigvalsh(xx_mean)[-1])
    A = torch.zeros_like(xx_mean)
    scale = None
    history: list[float] = []
    with single_threaded():
        for _ in range(max_iter):
            grad = risk_grad(A, m).mean(0) / 2  # = A · mean xx − mean xyᵀ
            norm = float(grad.norm())
            scale = scale or max(1.0, norm)
            history.append(float(risk(A, m).mean()))
            if norm <= tol * scale:
                break
            A = A - step * grad
    return SRResult(A=A, loss=float(risk(A, m).mean()), history=history)
