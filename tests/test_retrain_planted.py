"""Holdout check: the network loop reproduces the linear theory on a planted problem.

One ``nn.Linear`` (d x d, no bias) trained by :func:`metanb.retrain.retrain` on regression
batches of tasks ``M_t = A* + U_t U_tᵀ``: LoRA-ML with symmetric rank-k adapters recovers A*,
standard retraining lands on A* + mean_t U_t U_tᵀ (the SR limit of the theory chapters).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from metanb.retrain import retrain

D, K, T = 8, 1, 5


class LinearRegression(nn.Module):
    """y = W x, squared loss summed over outputs: E‖(W - M_t) x‖² = ‖W - M_t‖_F² per task."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=(self.linear(x) - labels).square().sum(-1).mean())


@pytest.fixture(scope="module")
def planted():
    g = torch.Generator().manual_seed(0)
    A_star = torch.randn(D, D, generator=g, dtype=torch.float64) / D**0.5
    U_star = torch.randn(T, D, K, generator=g, dtype=torch.float64) / D**0.25
    M = A_star + U_star @ U_star.transpose(1, 2)
    tasks = []
    for t in range(T):
        xs = [torch.randn(64, D, generator=g, dtype=torch.float64) for _ in range(8)]
        tasks.append([{"x": x, "labels": x @ M[t].T} for x in xs])
    torch.manual_seed(0)
    return A_star, M, tasks, LinearRegression(D).double()


def relative_error(W: torch.Tensor, target: torch.Tensor) -> float:
    return ((W - target).norm() / target.norm()).item()


def test_lora_ml_with_symmetric_adapters_recovers_A_star(planted):
    A_star, M, tasks, model = planted
    res = retrain(model, tasks, method="lora-ml", rank=K, symmetric=True, alpha=K, steps=200,
                  lr=5e-2, target_modules=("linear",), progress=False, device="cpu")
    W = res.model.linear.weight.detach()
    assert relative_error(W, A_star) <= 5e-2
    # each adapter is its task's shift: U_t U_tᵀ = M_t - A*
    U = res.adapter_state["linear.lora_U"]
    assert relative_error(U @ U.transpose(1, 2), M - A_star) <= 5e-2


def test_standard_retraining_lands_on_the_sr_limit_not_on_A_star(planted):
    A_star, M, tasks, model = planted
    res = retrain(model, tasks, method="standard", steps=200, lr=5e-2,
                  target_modules=("linear",), progress=False, device="cpu")
    W = res.model.linear.weight.detach()
    sr_limit = M.mean(0)  # A* + mean_t U_t U_tᵀ
    assert relative_error(W, sr_limit) <= 0.1
    assert relative_error(W, A_star) >= 0.3
