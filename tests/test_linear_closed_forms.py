"""Linear theory: data model, risks, SR and the low-rank closed forms against direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from metanb import MetanbError
from metanb.linear import (
    TaskData,
    adapter_dim,
    as_moments,
    best_rank_r_fit,
    lora_ml_rate,
    make_ground_truth,
    population_excess_error,
    risk,
    sample_new_task,
    sample_task_data,
    sr_floor,
    sr_limit,
    standard_retraining,
    standard_retraining_gd,
    task_matrices,
)


@pytest.fixture(scope="module")
def truth():
    return make_ground_truth(d=12, k=2, tasks=4, seed=3)


def test_ground_truth_shapes_scaling_and_prefix_consistency(truth):
    assert truth.A_star.shape == (12, 12) and truth.U_star.shape == (4, 12, 2)
    assert truth.A_star.dtype == torch.float64
    M = truth.task_matrices()
    assert torch.allclose(M, task_matrices(truth.A_star, truth.U_star))
    assert torch.allclose(M[1], truth.A_star + truth.U_star[1] @ truth.U_star[1].T)
    # the first T tasks do not depend on how many tasks were drawn
    more = make_ground_truth(12, 2, 6, seed=3)
    assert torch.equal(more.A_star, truth.A_star) and torch.equal(more.U_star[:4], truth.U_star)
    # N(0, 1/d) entries: ‖A*‖_F² ≈ d, columns of U have squared norm ≈ 1
    big = make_ground_truth(400, 3, 2, seed=0)
    assert abs(float(big.A_star.norm() ** 2) / 400 - 1) < 0.05
    assert abs(float((big.U_star**2).sum(1).mean()) - 1) < 0.1


def test_new_task_shares_the_base(truth):
    M_new, U_new = sample_new_task(truth, seed=9)
    assert torch.allclose(M_new, truth.A_star + U_new @ U_new.T)
    assert not torch.allclose(U_new, truth.U_star[0])


@pytest.mark.parametrize("bad", [dict(d=5, k=6, tasks=2), dict(d=5, k=0, tasks=2),
                                 dict(d=5, k=2, tasks=0)])
def test_bad_sizes_raise_metanb_error(bad):
    with pytest.raises(MetanbError):
        make_ground_truth(**bad, seed=0)


def test_population_risk_is_frobenius_and_empirical_risk_is_the_sample_mean(truth):
    M = truth.task_matrices()
    B = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(risk(B, as_moments(M)), ((B - M) ** 2).sum((-1, -2)))
    data = sample_task_data(M, 50, sigma=0.5, generator=0)
    assert data.X.shape == (4, 50, 12) and data.Y.shape == (4, 50, 12)
    direct = ((data.Y - data.X @ B.T) ** 2).sum(-1).mean(-1)
    assert torch.allclose(risk(B, as_moments(data)), direct)
    # the noise has variance sigma² per output
    big = sample_task_data(M[0], 20_000, sigma=0.5, generator=1)
    resid = big.Y - big.X @ M[0].T
    assert abs(float(resid.var()) - 0.25) < 0.01


def test_population_excess_error_matches_monte_carlo(truth):
    M = truth.task_matrices()[0]
    M_hat = truth.A_star
    data = sample_task_data(M, 40_000, sigma=0.0, generator=2)
    mc = float(((data.X @ (M_hat - M).T) ** 2).sum(-1).mean())
    assert population_excess_error(M_hat, M) == pytest.approx(mc, rel=0.03)


def test_sr_closed_form_is_the_average_task_and_equals_sr_limit(truth):
    M = truth.task_matrices()
    A_sr = standard_retraining(M)
    assert torch.allclose(A_sr, M.mean(0), atol=1e-12)
    assert torch.allclose(A_sr, sr_limit(truth.A_star, truth.U_star), atol=1e-12)
    # the shift has rank T k
    s = torch.linalg.svdvals(A_sr - truth.A_star)
    assert (s > 1e-8).sum() == truth.tasks * truth.k


@pytest.mark.parametrize("samples", [math.inf, 30])
def test_sr_gradient_descent_agrees_with_closed_form(truth, samples):
    M = truth.task_matrices()
    data = M if math.isinf(samples) else sample_task_data(M, samples, 1.0, generator=4)
    closed = standard_retraining(data)
    gd = standard_retraining_gd(data, tol=1e-12)
    assert torch.allclose(gd.A, closed, atol=1e-8)
    assert gd.history[0] > gd.loss
    # the closed form is a stationary point of the pooled empirical risk
    A = closed.clone().requires_grad_(True)
    risk(A, as_moments(data)).mean().backward()
    assert float(A.grad.abs().max()) < 1e-10


def test_sr_from_samples_converges_to_the_limit_not_to_a_star(truth):
    M = truth.task_matrices()
    limit = sr_limit(truth.A_star, truth.U_star)
    far = standard_retraining(sample_task_data(M, 20_000, 1.0, generator=5))
    assert float((far - limit).norm()) < 0.1 * float((limit - truth.A_star).norm())


def test_best_rank_r_fit_matches_eckart_young_asymmetric():
    g = torch.Generator().manual_seed(0)
    A, M = (torch.randn(10, 10, generator=g, dtype=torch.float64) for _ in range(2))
    s = torch.linalg.svdvals(M - A)
    for r in (1, 3, 6):
        fit = best_rank_r_fit(A, M, r, symmetric=False)
        assert torch.linalg.matrix_rank(fit.delta) == r
        err = population_excess_error(A + fit.delta, M)
        assert err == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-10)
        assert sr_floor(A, M, r, symmetric=False) == pytest.approx(err, rel=1e-10)


def test_best_symmetric_fit_keeps_top_positive_eigenvalues_and_is_locally_optimal():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64)
    M = torch.randn(8, 8, generator=g, dtype=torch.float64)
    for r in (1, 2, 4):
        fit = best_rank_r_fit(A, M, r)
        assert fit.symmetric and fit.U.shape == (8, r)
        err = population_excess_error(A + fit.delta, M)
        assert fit.loss == pytest.approx(err)
        # the spectral formula of sr_floor agrees with the constructed fit
        assert sr_floor(A, M, r) == pytest.approx(err, rel=1e-10)
        # no nearby U does better
        for _ in range(20):
            U = fit.U + 1e-3 * torch.randn(fit.U.shape, generator=g, dtype=torch.float64)
            assert population_excess_error(A + U @ U.T, M) >= err - 1e-12
    # a PSD rank-k residual is fitted exactly
    U = torch.randn(8, 2, generator=g, dtype=torch.float64)
    assert sr_floor(A, A + U @ U.T, 2) < 1e-20
    assert sr_floor(A, A + U @ U.T, 1) > 1e-3


def test_sr_floor_is_positive_for_sr_and_zero_for_the_true_base(truth):
    M_new, _ = sample_new_task(truth, seed=0)
    assert sr_floor(sr_limit(truth.A_star, truth.U_star), M_new, truth.k) > 0.05
    assert sr_floor(truth.A_star, M_new, truth.k) < 1e-20


def test_adapter_dim_and_rate():
    assert adapter_dim(20, 2) == 39 and adapter_dim(20, 1) == 20
    assert adapter_dim(20, 2, symmetric=False) == 76
    assert adapter_dim(5, 5) == 15  # all symmetric 5×5 matrices
    assert adapter_dim(5, 5, symmetric=False) == 25  # all 5×5 matrices
    assert lora_ml_rate(20, 2, 1000, 0.5) == pytest.approx(0.25 * 39 / 1000)
    assert lora_ml_rate(20, 2, math.inf, 1.0) == 0.0


def test_inputs_are_checked():
    M = torch.eye(4, dtype=torch.float64)
    with pytest.raises(MetanbError, match="samples"):
        sample_task_data(M, -1, 1.0)
    with pytest.raises(MetanbError, match="sigma"):
        sample_task_data(M, 5, -1.0)
    with pytest.raises(MetanbError, match="rank"):
        best_rank_r_fit(M, M, 0)
    with pytest.raises(MetanbError, match="TaskData"):
        standard_retraining([1, 2, 3])
    assert isinstance(sample_task_data(M, 3, 1.0), TaskData)
