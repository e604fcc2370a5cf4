"""LoRA-ML: gradients, recovery for T >= 3, the T = 2 family, asymmetric adapters, finite n."""

from __future__ import annotations

import pytest
import torch

from metanb import MetanbError
from metanb.linear import lora_ml, make_ground_truth, population_excess_error, sample_task_data
from metanb.linear.data import as_moments
from metanb.linear.experiments import GRID
from metanb.linear.family import (
    boost_angle,
    lorentz_coordinates,
    lorentz_defect,
    two_task_family,
)
from metanb.linear.lora_ml import lora_ml_objective


def rel_error(A, truth) -> float:
    return float((A - truth.A_star).norm() / truth.A_star.norm())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("population", [True, False])
def test_hand_written_gradients_match_autograd(symmetric, population):
    truth = make_ground_truth(6, 2, 3, seed=0)
    M = truth.task_matrices()
    m = as_moments(M if population else sample_task_data(M, 15, 1.0, generator=0))
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(6, 6, generator=g, dtype=torch.float64),
              torch.randn(3, 6, 2, generator=g, dtype=torch.float64)]
    if not symmetric:
        params.append(torch.randn(3, 6, 2, generator=g, dtype=torch.float64))
    objective = lora_ml_objective(m, symmetric)
    _, grads = objective(params)
    leaves = [p.clone().requires_grad_(True) for p in params]
    objective(leaves)[0].backward()
    for leaf, grad in zip(leaves, grads, strict=True):
        assert torch.allclose(leaf.grad, grad, atol=1e-10)


@pytest.mark.parametrize("tasks", [3, 5])
def test_population_lora_ml_recovers_a_star_for_three_or_more_tasks(tasks):
    for seed in (0, 1):
        truth = make_ground_truth(20, 2, tasks, seed)
        fit = lora_ml(truth.task_matrices(), 2, seed=seed)
        assert fit.loss < 1e-10
        assert rel_error(fit.A, truth) <= 1e-2
        assert rel_error(fit.A, truth) <= 1e-5  # in fact to optimisation precision
        # each adapter recovers U_t U_tᵀ (U_t up to a rotation)
        assert torch.allclose(fit.U @ fit.U.transpose(-1, -2),
                              truth.U_star @ truth.U_star.transpose(-1, -2), atol=1e-5)


def test_random_initialisation_also_recovers_for_three_tasks():
    truth = make_ground_truth(15, 2, 3, seed=4)
    for init_seed in (0, 1):
        fit = lora_ml(truth.task_matrices(), 2, init="random", seed=init_seed)
        assert rel_error(fit.A, truth) <= 1e-5


def test_one_task_does_not_identify_a_star():
    truth = make_ground_truth(15, 2, 1, seed=0)
    fit = lora_ml(truth.task_matrices(), 2)
    assert fit.loss < 1e-10 and rel_error(fit.A, truth) > 0.05


def test_two_tasks_two_inits_give_different_minimisers_on_the_family():
    truth = make_ground_truth(GRID.d, GRID.family_k, 2, seed=GRID.family_seed)
    M = truth.task_matrices()
    fits = [lora_ml(M, GRID.family_k, init="random", seed=s) for s in GRID.family_inits]
    for fit in fits:
        assert fit.loss < 1e-10
        L, residual = lorentz_coordinates(truth.U_star, fit.U)
        assert residual < 1e-6 and lorentz_defect(L) < 1e-6
        # it is exactly the family member with its boost angle
        A_theta, _ = two_task_family(truth.A_star, truth.U_star, boost_angle(L))
        assert torch.allclose(A_theta, fit.A, atol=1e-6)
    gap = float((fits[0].A - fits[1].A).norm() / truth.A_star.norm())
    assert gap > 0.01  # clearly different bases with the same (zero) loss
    assert min(rel_error(f.A, truth) for f in fits) > 0.01


@pytest.mark.parametrize("k", [1, 3])
def test_the_explicit_two_task_family_has_zero_loss(k):
    truth = make_ground_truth(10, k, 2, seed=2)
    M = truth.task_matrices()
    for theta in (-0.7, 0.0, 0.4):
        A, U = two_task_family(truth.A_star, truth.U_star, theta)
        assert float(population_excess_error(A + U @ U.transpose(-1, -2), M).max()) < 1e-20
        assert (rel_error(A, truth) < 1e-14) == (theta == 0.0)


def test_two_task_minimisers_from_general_k_lie_in_o_k_k():
    truth = make_ground_truth(16, 2, 2, seed=1)
    fit = lora_ml(truth.task_matrices(), 2, init="random", seed=3)
    L, residual = lorentz_coordinates(truth.U_star, fit.U)
    assert fit.loss < 1e-10 and residual < 1e-6 and lorentz_defect(L) < 1e-5


def test_asymmetric_lora_ml_recovers_a_star():
    truth = make_ground_truth(16, 2, 3, seed=5)
    fit = lora_ml(truth.task_matrices(), 2, symmetric=False)
    assert fit.V is not None and fit.V.shape == fit.U.shape == (3, 16, 2)
    assert fit.loss < 1e-10
    assert rel_error(fit.A, truth) <= 1e-2
    assert torch.allclose(fit.task_matrices, truth.task_matrices(), atol=1e-5)


def test_finite_sample_lora_ml_improves_with_n_and_beats_sr():
    from metanb.linear import standard_retraining

    truth = make_ground_truth(10, 1, 3, seed=0)
    M = truth.task_matrices()
    errors, sr_errors = [], []
    for n in (200, 5000):
        data = sample_task_data(M, n, 0.5, generator=n)
        errors.append(rel_error(lora_ml(data, 1).A, truth))
        sr_errors.append(rel_error(standard_retraining(data), truth))
    assert errors[1] < errors[0] / 2
    assert errors[1] < sr_errors[1] / 3


def test_history_decreases_and_bad_arguments_raise():
    truth = make_ground_truth(8, 1, 3, seed=0)
    fit = lora_ml(truth.task_matrices(), 1, init="random")
    assert fit.history[0] > 1e3 * max(fit.loss, 1e-16)
    with pytest.raises(MetanbError, match="init"):
        lora_ml(truth.task_matrices(), 1, init="zeros")
    with pytest.raises(MetanbError, match="rank"):
        lora_ml(truth.task_matrices(), 9)
    with pytest.raises(MetanbError, match="stack"):
        lora_ml(truth.task_matrices()[0], 1)
