"""Meta-learning methods in the linear model: MAML's exact meta-gradient, Reptile and first-order
MAML against SR, ANIL's and ADAPTREP's objectives and closed forms, bad input, the comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metanb import MetanbError
from metanb.linear import make_ground_truth, sample_task_data, standard_retraining
from metanb.linear.data import as_moments, risk, risk_grad
from metanb.linear.ground_truth import child_generator
from metanb.linear.lowrank import sr_floor
from metanb.linear.metalearning import (
    InnerLoop,
    MetaGrid,
    adaptrep,
    adaptrep_objective,
    anil,
    anil_objective,
    finetune_adaptrep,
    finetune_head,
    fomaml_direction,
    inner_loop,
    maml,
    maml_objective,
    meta_learning_comparison,
    reptile,
    reptile_direction,
    split_support_query,
)
from metanb.linear.optim import minimise
from metanb.linear.run import STREAM_RETRAIN_DATA

D, K, T = 6, 1, 3


@pytest.fixture(scope="module")
def truth():
    return make_ground_truth(D, K, T, seed=0)


@pytest.fixture(scope="module")
def data(truth):
    return sample_task_data(truth.task_matrices(), 40, 1.0, generator=1)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _autograd(objective, params):
    leaves = [p.clone().requires_grad_(True) for p in params]
    objective(leaves)[0].backward()
    return [leaf.grad for leaf in leaves]


# ---- MAML ---------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [0, 1, 3])
def test_maml_meta_gradient_is_exact_second_order(data, steps):
    """The hand-written gradient (query gradient times G^s) equals autograd through the steps."""
    support, query = split_support_query(data)
    objective = maml_objective(support, query, InnerLoop(step=0.1, steps=steps))
    A = _randn(D, D)
    _, (grad,) = objective([A])
    (auto,) = _autograd(objective, [A])
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)


def test_maml_meta_gradient_matches_finite_differences(data):
    support, query = split_support_query(data, 0.25)
    objective = maml_objective(support, query, InnerLoop(step=0.2, steps=2))
    A, E = _randn(D, D, seed=1), _randn(D, D, seed=2)
    _, (grad,) = objective([A])
    h = 1e-6
    numeric = (objective([A + h * E])[0] - objective([A - h * E])[0]) / (2 * h)
    assert float(numeric) == pytest.approx(float((grad * E).sum()), rel=1e-6)


def test_population_maml_objective_is_a_multiple_of_srs(truth):
    """With xx = I every inner step shrinks M_t − A by (1 − 2α): L(A) = (1 − 2α)^{2s} L_SR(A),
    so MAML's minimiser is SR's base, the mean task matrix."""
    M = truth.task_matrices()
    loop = InnerLoop(step=0.15, steps=3)
    objective = maml_objective(M, M, loop)
    A = _randn(D, D, seed=3)
    sr_loss = ((A - M) ** 2).sum((-1, -2)).mean()
    assert float(objective([A])[0]) == pytest.approx((1 - 2 * 0.15) ** 6 * float(sr_loss),
                                                     rel=1e-12)
    (A_maml,), _ = minimise([torch.zeros(D, D, dtype=torch.float64)], objective)
    torch.testing.assert_close(A_maml, M.mean(0), atol=1e-7, rtol=0)


def test_maml_on_samples_minimises_its_objective(data):
    fit = maml(data, InnerLoop(step=0.1, steps=2))
    support, query = split_support_query(data)
    _, (grad,) = maml_objective(support, query, InnerLoop(step=0.1, steps=2))([fit.A])
    assert float(grad.abs().max()) < 1e-8
    assert fit.A.shape == (D, D)


def test_inner_loop_shapes_and_single_step(truth, data):
    A = _randn(D, D)
    B = inner_loop(A, data, InnerLoop(step=0.1, steps=1))
    assert B.shape == (T, D, D)
    m = as_moments(data)
    torch.testing.assert_close(B, A - 0.1 * risk_grad(A.expand(T, D, D), m))
    one = inner_loop(A, truth.task_matrices()[0], InnerLoop(step=0.5, steps=1))
    assert one.shape == (1, D, D)  # step 1/2 with xx = I lands exactly on the task
    torch.testing.assert_close(one[0], truth.task_matrices()[0])
    torch.testing.assert_close(inner_loop(A, data, InnerLoop(steps=0)), A.expand(T, D, D))


# ---- first-order MAML and Reptile -----------------------------------------------------------

def test_reptile_with_one_step_is_minus_alpha_times_srs_gradient(data):
    """Reptile's direction (1/T) Σ (B_1,t − A) = −α ∇_A (1/T) Σ risk_t(A): SR's gradient."""
    A = _randn(D, D, seed=4)
    m = as_moments(data)
    sr_gradient = risk_grad(A.expand(T, D, D), m).mean(0)
    torch.testing.assert_close(reptile_direction(A, data, InnerLoop(step=0.07, steps=1)),
                               -0.07 * sr_gradient)
    leaf = A.clone().requires_grad_(True)
    risk(leaf.expand(T, D, D), m).mean().backward()
    torch.testing.assert_close(leaf.grad, sr_gradient)


def test_fomaml_without_steps_is_the_maml_gradient(data):
    support, query = split_support_query(data)
    A = _randn(D, D, seed=5)
    loop = InnerLoop(steps=0)
    _, (grad,) = maml_objective(support, query, loop)([A])
    torch.testing.assert_close(fomaml_direction(A, support, query, loop), grad)
    # with steps the first-order direction drops the G^s factor, so it differs
    loop = InnerLoop(step=0.2, steps=2)
    _, (grad,) = maml_objective(support, query, loop)([A])
    assert float((fomaml_direction(A, support, query, loop) - grad).norm()) > 1e-3


def test_reptile_converges_to_srs_base(truth, data):
    M = truth.task_matrices()
    fit = reptile(M, InnerLoop(step=0.15, steps=4))
    torch.testing.assert_close(fit.A, M.mean(0), atol=1e-9, rtol=0)
    assert fit.loss <= 1e-10
    with_one_step = reptile(data, InnerLoop(step=0.2, steps=1), tol=1e-12)
    torch.testing.assert_close(with_one_step.A, standard_retraining(data), atol=1e-9, rtol=0)


# ---- ANIL and ADAPTREP ----------------------------------------------------------------------

@pytest.mark.parametrize("population", [True, False])
def test_representation_gradients_match_autograd(truth, data, population):
    m = as_moments(truth.task_matrices() if population else data)
    r = 2
    A, Phi, H, V = _randn(D, D), _randn(D, r, seed=1), _randn(T, D, r, seed=2), _randn(
        T, D, r, seed=3)
    for objective, params in ((anil_objective(m), [A, Phi, H]),
                              (adaptrep_objective(m, 0.7), [A, Phi, H, V])):
        _, grads = objective(params)
        for grad, auto in zip(grads, _autograd(objective, params), strict=True):
            torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)


def test_anil_reaches_its_population_closed_form():
    """Population ANIL: A = mean M_t off range Φ, Φ = top-r eigenvectors of Σ R_tᵀR_t with
    R_t = M_t − mean M: the minimum is (1/T)(Σ‖R_t‖² − Σ_{i≤r} λ_i)."""
    truth = make_ground_truth(8, 2, 4, seed=2)
    M = truth.task_matrices()
    R = M - M.mean(0)
    evals = torch.linalg.eigvalsh((R.transpose(-1, -2) @ R).sum(0))
    closed = float(((R**2).sum() - evals[-2:].sum()) / 4)
    fit = anil(M, 2)
    assert fit.loss == pytest.approx(closed, rel=1e-8, abs=1e-10)
    assert (fit.A.shape, fit.Phi.shape, fit.H.shape, fit.V) == ((8, 8), (8, 2), (4, 8, 2), None)


def test_finetune_head_is_the_projection_of_the_residual(truth):
    M_new = truth.task_matrices()[0]
    A, Phi = _randn(D, D, seed=6), _randn(D, 2, seed=7)
    P = Phi @ torch.linalg.pinv(Phi)
    torch.testing.assert_close(finetune_head(A, Phi, M_new), (M_new - A) @ P)


def test_adaptrep_fine_tuning_interpolates_anil_and_free_low_rank(truth):
    """λ → ∞ freezes the representation (ANIL's head); λ = 0 is a free rank-r update, whose
    population optimum is the Eckart-Young tail of the residual."""
    M_new = truth.task_matrices()[1]
    A, Phi = truth.A_star + 0.3 * _randn(D, D, seed=8), _randn(D, 1, seed=9)
    frozen = finetune_adaptrep(A, Phi, M_new, penalty=1e8)
    torch.testing.assert_close(frozen, finetune_head(A, Phi, M_new), atol=1e-5, rtol=0)
    free = finetune_adaptrep(A, Phi, M_new, penalty=0.0, max_iter=2000)
    tail = sr_floor(A, M_new, 1, symmetric=False)
    assert float(((A + free - M_new) ** 2).sum()) == pytest.approx(tail, rel=1e-6)


def test_adaptrep_starts_from_anil_and_lowers_the_training_loss(truth):
    M = truth.task_matrices()
    start, fit = anil(M, 1), adaptrep(M, 1, penalty=0.5)
    assert fit.V.shape == (T, D, 1)
    assert fit.loss <= start.loss + 1e-12
    frozen = adaptrep(M, 1, penalty=1e9)
    assert frozen.loss == pytest.approx(start.loss, rel=1e-6)


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"step": 0.0}, "step must be a positive"),
    ({"step": math.nan}, "step must be a positive"),
    ({"steps": -1}, "steps must be an integer"),
    ({"steps": 1.5}, "steps must be an integer"),
    ({"steps": True}, "steps must be an integer"),
])
def test_inner_loop_refuses_bad_settings(kwargs, match):
    with pytest.raises(MetanbError, match=match):
        InnerLoop(**kwargs)


def test_bad_input_is_refused_in_one_line(truth, data):
    M = truth.task_matrices()
    with pytest.raises(MetanbError, match="support_fraction must be in"):
        split_support_query(data, 1.0)
    tiny = sample_task_data(M, 1, 1.0, generator=0)
    with pytest.raises(MetanbError, match="cannot be split"):
        split_support_query(tiny, 0.5)
    support, _ = split_support_query(data)
    with pytest.raises(MetanbError, match="same tasks"):
        maml_objective(support, M[:2], InnerLoop())
    with pytest.raises(MetanbError, match="stack of tasks"):
        anil(M[0], 1)
    with pytest.raises(MetanbError, match="rank must satisfy"):
        anil(M, D + 1)
    with pytest.raises(MetanbError, match="penalty must be"):
        adaptrep(M, 1, penalty=-1.0)
    with pytest.raises(MetanbError, match="adapts one task"):
        finetune_head(truth.A_star, _randn(D, 1), M)
    with pytest.raises(MetanbError, match="adapts one task"):
        finetune_adaptrep(truth.A_star, _randn(D, 1), M, 0.1)
    with pytest.raises(MetanbError, match="learning rate must be positive"):
        reptile(M, lr=0.0)
    with pytest.raises(MetanbError, match="one task .* or a stack"):
        inner_loop(truth.A_star, torch.zeros(2, 2, D, D), InnerLoop())


# ---- the comparison -------------------------------------------------------------------------

def test_comparison_shapes_floors_and_determinism():
    grid = MetaGrid(d=6, k=1, tasks=3, retrain_samples=200, new_tasks=2, seeds=(0, 1),
                    finetune_samples=(30, 3000))
    out = meta_learning_comparison(grid, progress=False)
    again = meta_learning_comparison(grid, progress=False)
    assert list(out["samples"]) == [30, 3000]
    for name in out["methods"]:
        assert out["error"][name].shape == (2, 2) and out["floor"][name].shape == (2,)
        assert np.isfinite(out["error"][name]).all() and (out["error"][name] >= 0).all()
        np.testing.assert_array_equal(out["error"][name], again["error"][name])
    # the bases are fitted on the run's retraining stream: SR's is pooled least squares on it
    truth = make_ground_truth(6, 1, 3, seed=0)
    retrain = sample_task_data(truth.task_matrices(), 200, 1.0,
                               child_generator(0, STREAM_RETRAIN_DATA))
    A_sr = standard_retraining(retrain)
    rel = float((A_sr - truth.A_star).norm() / truth.A_star.norm())
    assert out["rel_error"]["sr"][0] == pytest.approx(rel, rel=1e-12)
    # SR's base used as it is, the reference line: worse than adapting it with a LoRA adapter
    assert out["unadapted"].shape == (2,)
    assert (out["unadapted"] > out["floor"]["sr"]).all()
    # SR keeps a floor; with 3000 fine-tuning samples its error is near it
    assert out["floor"]["sr"].min() > 0
    assert out["error"]["sr"][:, 1].mean() == pytest.approx(out["floor"]["sr"].mean(), rel=0.5)
