"""Fine-tuning a rank-r adapter: closed forms, optimality, and the SR-floor vs k d / n contrast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metanb.linear import (
    best_rank_r_fit,
    child_generator,
    finetune_adapter,
    lora_ml,
    lora_ml_rate,
    make_ground_truth,
    population_excess_error,
    risk,
    sample_new_task,
    sample_task_data,
    sr_floor,
    standard_retraining,
)
from metanb.linear.data import as_moments
from metanb.linear.finetune import residual_moments


@pytest.fixture(scope="module")
def task():
    truth = make_ground_truth(12, 2, 3, seed=0)
    M_new, _ = sample_new_task(truth, seed=1)
    return truth, M_new


@pytest.mark.parametrize("symmetric", [True, False])
def test_population_finetuning_is_the_best_rank_r_fit(task, symmetric):
    truth, M_new = task
    A = standard_retraining(truth.task_matrices())
    fit = finetune_adapter(A, M_new, 2, symmetric=symmetric)
    best = best_rank_r_fit(A, M_new, 2, symmetric=symmetric)
    assert torch.allclose(fit.delta, best.delta)
    assert population_excess_error(A + fit.delta, M_new) == pytest.approx(
        sr_floor(A, M_new, 2, symmetric=symmetric))


def test_reduced_rank_regression_is_the_empirical_minimiser(task):
    truth, M_new = task
    data = sample_task_data(M_new, 40, 1.0, generator=2)
    A = truth.A_star
    fit = finetune_adapter(A, data, 2, symmetric=False)
    assert torch.linalg.matrix_rank(fit.delta) == 2
    m = as_moments(data)
    best = float(risk(A + fit.delta, m))
    assert fit.loss == pytest.approx(best)
    # gradient-based minimisation over (U, V) from many starts never beats the closed form
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        U = (0.3 * torch.randn(12, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
        V = (0.3 * torch.randn(12, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
        opt = torch.optim.LBFGS([U, V], max_iter=500, line_search_fn="strong_wolfe")

        def closure(U=U, V=V, opt=opt):
            opt.zero_grad()
            loss = risk(A + U @ V.T, m)
            loss.backward()
            return loss

        opt.step(closure)
        assert float(risk(A + U.detach() @ V.detach().T, m)) >= best - 1e-9


def test_symmetric_finetuning_reaches_a_stationary_point_better_than_its_start(task):
    truth, M_new = task
    data = sample_task_data(M_new, 60, 1.0, generator=3)
    fit = finetune_adapter(truth.A_star, data, 2)
    assert fit.symmetric and fit.U.shape == (12, 2)
    m = residual_moments(truth.A_star, as_moments(data))
    U = fit.U.clone().requires_grad_(True)
    risk(U @ U.T, m).backward()
    assert float(U.grad.abs().max()) < 1e-6
    # its spectral start (best PSD fit of the moment estimate of the residual) is worse
    start = best_rank_r_fit(torch.zeros(12, 12, dtype=torch.float64), (m.xy + m.xy.T) / 2, 2)
    assert fit.loss < float(risk(start.delta, m))


def test_symmetric_finetuning_with_fewer_samples_than_dimensions_stays_bounded(task):
    truth, M_new = task
    for n in (3, 11):  # n < d = 12: the empirical risk alone has unbounded minimising directions
        data = sample_task_data(M_new, n, 1.0, generator=n)
        fit = finetune_adapter(truth.A_star, data, 2)
        assert population_excess_error(truth.A_star + fit.delta, M_new) < 100


def test_more_data_does_not_help_sr_but_helps_lora_ml_at_the_predicted_rate():
    d, k, T, sigma = 16, 2, 4, 1.0
    seeds = range(4)
    ns = (300, 3000)
    sr_err = np.zeros((len(seeds), len(ns)))
    ml_err = np.zeros_like(sr_err)
    floors = []
    for i, seed in enumerate(seeds):
        truth = make_ground_truth(d, k, T, seed)
        M = truth.task_matrices()
        A_sr, A_ml = standard_retraining(M), lora_ml(M, k, seed=seed).A
        M_new, _ = sample_new_task(truth, child_generator(seed, 2))
        floors.append(sr_floor(A_sr, M_new, k))
        for j, n in enumerate(ns):
            data = sample_task_data(M_new, n, sigma, child_generator(seed, 10 + j))
            sr_err[i, j] = population_excess_error(A_sr + finetune_adapter(A_sr, data, k).delta,
                                                   M_new)
            ml_err[i, j] = population_excess_error(A_ml + finetune_adapter(A_ml, data, k).delta,
                                                   M_new)
    floor = np.mean(floors)
    # SR: ten times more data leaves the error at (just above) its floor
    assert sr_err[:, 1].mean() > floor
    assert sr_err[:, 1].mean() < 1.2 * floor
    assert sr_err[:, 1].mean() > 0.6 * sr_err[:, 0].mean()
    # LoRA-ML: the error falls like 1/n and tracks σ² p / n within 30 %
    assert ml_err[:, 1].mean() < ml_err[:, 0].mean() / 5
    for j, n in enumerate(ns):
        ratio = ml_err[:, j].mean() / lora_ml_rate(d, k, n, sigma)
        assert 0.7 < ratio < 1.3, (n, ratio)
    assert ml_err[:, 1].mean() < floor / 20


def test_asymmetric_rate_constant(task):
    truth, M_new = task
    n, sigma = 2000, 1.0
    errs = []
    for seed in range(6):
        data = sample_task_data(M_new, n, sigma, generator=100 + seed)
        tuned = finetune_adapter(truth.A_star, data, 2, symmetric=False)
        errs.append(population_excess_error(truth.A_star + tuned.delta, M_new))
    ratio = np.mean(errs) / lora_ml_rate(12, 2, n, sigma, symmetric=False)
    assert 0.7 < ratio < 1.3
