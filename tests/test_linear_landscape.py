"""The LoRA-ML landscape: the SR saddle's Hessian (autograd vs closed forms), gradient descent
stuck at U = 0 vs escaping, the flat T = 2 valley, and the third task that collapses it."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from metanb import MetanbError
from metanb.linear import lora_ml, make_ground_truth, standard_retraining
from metanb.linear.data import as_moments
from metanb.linear.family import two_task_family
from metanb.linear.landscape import (
    family_landings,
    family_tangent,
    finetune_hessian_at_zero,
    gradient_descent,
    lora_ml_hessian,
    negative_curvature_share,
    saddle_min_eigenvalue,
    saddle_point,
    saddle_spectrum,
    spectral_direction,
    third_task_profile,
    valley_section,
)
from metanb.linear.lora_ml import lora_ml_objective
from metanb.plots import landscape as plots

matplotlib.use("Agg")

F64 = torch.float64


def rel_error(A, truth) -> float:
    return float((A - truth.A_star).norm() / truth.A_star.norm())


def test_sr_point_is_a_critical_point():
    M = make_ground_truth(6, 2, 3, seed=0).task_matrices()
    A, U = saddle_point(M, 2)
    _, (gA, gU) = lora_ml_objective(as_moments(M), symmetric=True)([A, U])
    assert float(gA.abs().max()) < 1e-12
    assert bool((gU == 0).all()) and U.shape == (3, 6, 2)


def test_saddle_hessian_matches_closed_form_spectrum():
    d, k, T = 6, 2, 3
    M = make_ground_truth(d, k, T, seed=1).task_matrices()
    H = lora_ml_hessian(M, *saddle_point(M, k))
    assert H.shape == (d * d + T * d * k,) * 2
    numeric = torch.linalg.eigvalsh(H)
    closed = saddle_spectrum(M, k)
    assert float((numeric - closed).abs().max()) < 1e-10
    assert numeric[0].item() == pytest.approx(saddle_min_eigenvalue(M), abs=1e-12)
    assert saddle_min_eigenvalue(M) < -0.1
    # each R_t has k positive eigenvalues, each counted k times: T k² negative directions
    assert int((numeric < -1e-10).sum()) == T * k * k
    assert int((numeric > 2 - 1e-10).sum()) >= d * d  # the A block is 2 I


def test_saddle_eigenvalue_for_orthogonal_tasks_is_minus_eight_ninths():
    """M_t = e_t e_tᵀ (t = 1..3, A* = 0, d = 4): R_t = e_t e_tᵀ − (1/3) Σ_s e_s e_sᵀ has top
    eigenvalue 2/3, so λ_min = −(4/3)(2/3) = −8/9."""
    eye = torch.eye(4, dtype=F64)
    U = eye[:, :3].T.reshape(3, 4, 1)
    M = U @ U.transpose(-1, -2)
    H = lora_ml_hessian(M, *saddle_point(M, 1))
    assert float(torch.linalg.eigvalsh(H)[0]) == pytest.approx(-8 / 9, abs=1e-12)
    assert saddle_min_eigenvalue(M) == pytest.approx(-8 / 9, abs=1e-12)


def test_spectral_start_steps_along_negative_curvature_only():
    M = make_ground_truth(6, 1, 3, seed=2).task_matrices()
    H = lora_ml_hessian(M, *saddle_point(M, 1))
    assert negative_curvature_share(H, spectral_direction(M, 1)) == pytest.approx(1.0, abs=1e-10)
    # a direction in the A block alone has positive curvature only
    e = torch.zeros(H.shape[0], dtype=F64)
    e[0] = 1.0
    assert negative_curvature_share(H, e) < 1e-20


def test_finetune_hessian_at_zero_matches_autograd():
    truth = make_ground_truth(5, 2, 2, seed=3)
    A, M_new = truth.A_star, truth.task_matrices()[0]

    def f(u: torch.Tensor) -> torch.Tensor:
        U = u.view(5, 2)
        return ((A + U @ U.T - M_new) ** 2).sum()

    H = torch.autograd.functional.hessian(f, torch.zeros(10, dtype=F64))
    closed = finetune_hessian_at_zero(A, M_new, 2)
    assert float((torch.linalg.eigvalsh(H) - closed).abs().max()) < 1e-10
    top = torch.linalg.eigvalsh(truth.U_star[0] @ truth.U_star[0].T)[-1]
    assert float(closed[0]) == pytest.approx(-4 * float(top), abs=1e-12)


def test_gradient_descent_from_exact_zero_stays_there_and_is_sr():
    truth = make_ground_truth(6, 1, 3, seed=0)
    M = truth.task_matrices()
    A0 = torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=F64)
    trace = gradient_descent(M, A0, torch.zeros(3, 6, 1, dtype=F64), lr=0.1, steps=800)
    assert max(trace.u_norm) == 0.0 and bool((trace.U == 0).all())
    A_sr = standard_retraining(M)
    assert float((trace.A - A_sr).norm()) < 1e-10
    sr_loss = float(((A_sr - M) ** 2).sum((-1, -2)).mean())
    assert trace.loss[-1] == pytest.approx(sr_loss, rel=1e-10)
    assert len(trace.loss) == 800


def test_gradient_descent_from_a_small_start_escapes_to_zero_loss():
    truth = make_ground_truth(6, 1, 3, seed=0)
    g = torch.Generator().manual_seed(5)
    A0 = torch.randn(6, 6, generator=g, dtype=F64) / math.sqrt(6)
    U0 = 1e-4 * torch.randn(3, 6, 1, generator=g, dtype=F64)
    trace = gradient_descent(truth.task_matrices(), A0, U0, lr=0.1, steps=5000)
    assert trace.loss[-1] < 1e-8
    assert rel_error(trace.A, truth) < 1e-3
    assert trace.u_norm[-1] > 1e3 * trace.u_norm[0]  # it left the saddle


def test_gradient_descent_refuses_a_bad_step():
    M = make_ground_truth(3, 1, 3, seed=0).task_matrices()
    A, U = saddle_point(M, 1)
    with pytest.raises(MetanbError, match=r"^lr must be a positive finite number, got 0\.0$"):
        gradient_descent(M, A, U, lr=0.0)
    with pytest.raises(MetanbError, match=r"^lr must be a positive finite number, got nan$"):
        gradient_descent(M, A, U, lr=math.nan)


def test_hessian_refuses_a_single_matrix():
    M = make_ground_truth(3, 1, 1, seed=0).task_matrices()[0]
    with pytest.raises(MetanbError, match=r"^expected task matrices of shape \(T, d, d\), "
                                          r"got \(3, 3\)$"):
        lora_ml_hessian(M, torch.zeros(3, 3, dtype=F64), torch.zeros(1, 3, 1, dtype=F64))


def test_two_task_valley_is_flat_along_the_family_only():
    two = make_ground_truth(6, 1, 2, seed=4)
    A, U = two_task_family(two.A_star, two.U_star, 0.7)
    H = lora_ml_hessian(two.task_matrices(), A, U)
    tangent = family_tangent(two.A_star, two.U_star, 0.7)
    assert float((H @ tangent).norm() / tangent.norm()) < 1e-12
    evals = torch.linalg.eigvalsh(H)
    assert int((evals.abs() < 1e-9).sum()) == 1  # k = 1: no rotations, one boost
    assert float(evals[1]) > 1e-3 and float(evals[0]) > -1e-9
    # the tangent is the numerical derivative of the family
    h = 1e-6
    ahead = two_task_family(two.A_star, two.U_star, 0.7 + h)
    behind = two_task_family(two.A_star, two.U_star, 0.7 - h)
    numeric = (torch.cat([ahead[0].reshape(-1), ahead[1].reshape(-1)])
               - torch.cat([behind[0].reshape(-1), behind[1].reshape(-1)])) / (2 * h)
    assert torch.allclose(numeric, tangent, atol=1e-8)


def test_third_task_collapses_the_family_and_recovers_A_star():
    truth = make_ground_truth(6, 1, 3, seed=0)  # 3k <= d
    thetas = np.linspace(-1.0, 1.0, 41)
    profile = third_task_profile(truth, thetas)
    assert profile[20] < 1e-20 and thetas[20] == 0.0
    assert (np.delete(profile, 20) > 1e-6).all()
    H3 = lora_ml_hessian(truth.task_matrices(), truth.A_star, truth.U_star)
    assert float(torch.linalg.eigvalsh(H3)[0]) > 1e-3  # an isolated minimum
    for seed in range(3):
        fit = lora_ml(truth.task_matrices(), 1, init="random", seed=seed)
        assert rel_error(fit.A, truth) < 1e-6
    with pytest.raises(MetanbError, match=r"^third_task_profile needs a ground truth with >= 3 "
                                          r"tasks, got 2$"):
        third_task_profile(truth.first(2), thetas)


def test_random_inits_land_on_the_family_at_different_points():
    two = make_ground_truth(6, 1, 2, seed=0)
    land = family_landings(two, range(4))
    assert set(land) == {"theta", "loss", "defect", "residual", "rel_error"}
    assert (land["loss"] < 1e-10).all() and (land["defect"] < 1e-6).all()
    assert (land["residual"] < 1e-6).all()
    assert np.ptp(land["theta"]) > 1e-3  # different minimisers
    # the base each run found is the family's base at its angle
    for theta, rel in zip(land["theta"], land["rel_error"], strict=True):
        A, _ = two_task_family(two.A_star, two.U_star, float(theta))
        assert rel == pytest.approx(rel_error(A, two), abs=1e-5)
    with pytest.raises(MetanbError, match=r"^family_landings needs T = 2 tasks of rank k = 1, "
                                          r"got T=3, k=1$"):
        family_landings(make_ground_truth(6, 1, 3, seed=0), range(1))


def test_valley_section_is_zero_on_the_floor_and_quadratic_across():
    two = make_ground_truth(5, 1, 2, seed=1)
    s = np.array([-1e-3, 0.0, 1e-3])
    section = valley_section(two, np.array([-0.5, 0.0, 0.5]), s)
    assert section["loss"].shape == (3, 3)
    assert (section["loss"][1] < 1e-20).all()
    curvature = float(section["curvature"])
    assert section["loss"][0, 1] == pytest.approx(0.5 * curvature * 1e-6, rel=1e-2)
    with pytest.raises(MetanbError, match=r"^valley_section needs T = 2 tasks, got 3$"):
        valley_section(make_ground_truth(5, 1, 3, seed=1), s, s)


def test_figures_draw():
    M = make_ground_truth(4, 1, 3, seed=0).task_matrices()
    A, U = saddle_point(M, 1)
    spec = saddle_spectrum(M, 1)
    trace = gradient_descent(M, A, U, steps=5)
    plane = make_ground_truth(2, 1, 2, seed=10)
    figures = [
        plots.plot_saddle_spectrum(spec, spec),
        plots.plot_escape({"zero": trace}),
        plots.plot_hyperbola(plane, 0.5),
        plots.plot_hyperbola_panels(plane, (0.0, 1.0)),
        plots.plot_landings({"a": np.array([0.0, 0.1, -0.2])}),
        plots.plot_valley(valley_section(plane, np.linspace(-1, 1, 5), np.linspace(-0.3, 0.3, 5)),
                      np.linspace(-1, 1, 5), np.zeros(5)),
    ]
    assert [len(f.axes) for f in figures] == [1, 2, 2, 2, 1, 3]  # valley: 2 panels + colourbar
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figures)
    plt.close("all")
