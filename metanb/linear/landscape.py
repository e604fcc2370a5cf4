"""The optimisation landscape of the (symmetric, population) LoRA-ML objective.

``L(A, U) = (1/T) Σ_t ‖A + U_t U_tᵀ − M_t‖_F²`` is non-convex, and three features of it explain
what gradient methods do:

- **The SR point is a strict saddle.** At ``(A_SR, U = 0)`` both gradients vanish
  (``∂L/∂U_t = (G_t + G_tᵀ) U_t / T = 0`` because ``U_t = 0``; ``∂L/∂A = 0`` because ``A_SR``
  is the mean of the ``M_t``). Expanding ``L`` to second order with ``R_t = M_t − A_SR``
  (symmetric, ``Σ_t R_t = 0``) gives ``½ vᵀ H v = ‖δA‖_F² − (2/T) Σ_t tr(δU_tᵀ R_t δU_t)``:
  the Hessian is ``2 I`` on A and ``−(4/T) R_t ⊗ I_k`` on ``U_t``, so its smallest eigenvalue is
  ``−(4/T) max_t λ_max(R_t) < 0`` (:func:`saddle_spectrum`).
- **U = 0 is invariant under gradient descent** (its U-gradient is zero whatever A is), so GD
  started exactly there is SR by another name; any small start leaves along the negative
  curvature (:func:`gradient_descent`).
- **T = 2 has a flat valley**: the curve :func:`metanb.linear.family.two_task_family` of exact
  minimisers, whose tangent :func:`family_tangent` is a zero-eigenvalue direction of the
  Hessian; a third generic task makes the loss positive along it except at ``θ = 0``
  (:func:`third_task_profile`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from metanb.errors import MetanbError
from metanb.linear.data import as_moments
from metanb.linear.family import boost_angle, lorentz_coordinates, lorentz_defect, two_task_family
from metanb.linear.ground_truth import GroundTruth
from metanb.linear.lora_ml import lora_ml, lora_ml_objective
from metanb.linear.lowrank import psd_factor, sr_floor
from metanb.linear.optim import single_threaded
from metanb.linear.standard import standard_retraining


def _check_tasks(M: Tensor) -> None:
    if M.ndim != 3 or M.shape[-1] != M.shape[-2]:
        raise MetanbError(f"expected task matrices of shape (T, d, d), got {tuple(M.shape)}")


def flatten(A: Tensor, U: Tensor) -> Tensor:
    """One parameter vector ``[vec A, vec U]`` (the order of every Hessian here)."""
    return torch.cat([A.reshape(-1), U.reshape(-1)])


def unflatten(x: Tensor, d: int, tasks: int, rank: int) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`flatten`."""
    return x[: d * d].view(d, d), x[d * d :].view(tasks, d, rank)


def lora_ml_hessian(M: Tensor, A: Tensor, U: Tensor) -> Tensor:
    """The Hessian of the population LoRA-ML objective at ``(A, U)``, by automatic
    differentiation of the package's objective (so it checks the closed forms, not copies them)."""
    _check_tasks(M)
    objective = lora_ml_objective(as_moments(M), symmetric=True)
    d, tasks, rank = A.shape[0], U.shape[0], U.shape[-1]

    def loss(x: Tensor) -> Tensor:
        return objective(list(unflatten(x, d, tasks, rank)))[0]

    with single_threaded():
        H = torch.autograd.functional.hessian(loss, flatten(A, U).detach().clone())
    return (H + H.T) / 2


def saddle_point(M: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """SR's solution with zero adapters, ``(A_SR, U = 0)``: a critical point of LoRA-ML."""
    _check_tasks(M)
    A = standard_retraining(M)
    return A, torch.zeros(M.shape[0], M.shape[-1], rank, dtype=A.dtype)


def saddle_spectrum(M: Tensor, rank: int) -> Tensor:
    """Closed-form Hessian eigenvalues at ``(A_SR, 0)``, ascending: ``2`` (d² times) and
    ``−(4/T) λ_i(sym(M_t − A_SR))`` (each ``rank`` times, for every task t and i)."""
    A, _ = saddle_point(M, rank)
    T, d = M.shape[0], M.shape[-1]
    R = M - A
    evals = torch.linalg.eigvalsh((R + R.transpose(-1, -2)) / 2)  # (T, d)
    u_block = (-4.0 / T * evals).reshape(-1).repeat_interleave(rank)
    return torch.sort(torch.cat([torch.full((d * d,), 2.0, dtype=A.dtype), u_block])).values


def saddle_min_eigenvalue(M: Tensor) -> float:
    """``−(4/T) max_t λ_max(M_t − A_SR)``: the most negative curvature at the SR saddle."""
    A = standard_retraining(M)
    R = M - A
    top = torch.linalg.eigvalsh((R + R.transpose(-1, -2)) / 2)[:, -1]
    return float(-4.0 / M.shape[0] * top.max())


def finetune_hessian_at_zero(A: Tensor, M_new: Tensor, rank: int) -> Tensor:
    """Closed-form eigenvalues (ascending) of the Hessian of ``U ↦ ‖A + U Uᵀ − M_new‖_F²`` at
    ``U = 0``: ``−4 λ_i(sym(M_new − A))``, each ``rank`` times. Negative whenever the residual
    has a positive eigenvalue: fine-tuning a LoRA factor from exactly zero is also a saddle."""
    R = M_new - A
    evals = torch.linalg.eigvalsh((R + R.T) / 2)
    return torch.sort((-4.0 * evals).repeat_interleave(rank)).values


def spectral_direction(M: Tensor, rank: int) -> Tensor:
    """The step ``(δA = 0, U_t = best PSD rank-r fit of M_t − A_SR)`` that the spectral
    initialisation of :func:`metanb.linear.lora_ml.lora_ml` takes from the saddle (flat)."""
    A, _ = saddle_point(M, rank)
    R = M - A
    return flatten(torch.zeros_like(A), psd_factor((R + R.transpose(-1, -2)) / 2, rank))


def negative_curvature_share(H: Tensor, v: Tensor) -> float:
    """``‖Π v‖² / ‖v‖²`` with Π the projector on the eigenvectors of ``H`` with negative
    eigenvalues: 1 when ``v`` points only along directions of negative curvature."""
    evals, evecs = torch.linalg.eigh(H)
    scale = float(evals.abs().max())
    neg = evecs[:, evals < -1e-12 * scale]
    return float((neg.T @ v).norm() ** 2 / v.norm() ** 2)


@dataclass
class DescentTrace:
    """Plain gradient descent on LoRA-ML: final ``A``, ``U``, loss and ‖U‖_F after every step."""

    A: Tensor
    U: Tensor
    loss: list[float] = field(default_factory=list)
    u_norm: list[float] = field(default_factory=list)


@single_threaded()
def gradient_descent(
    M: Tensor, A0: Tensor, U0: Tensor, lr: float = 0.1, steps: int = 3000, tol: float = 1e-14
) -> DescentTrace:
    """Fixed-step gradient descent on the population LoRA-ML objective from ``(A0, U0)``.

    Deliberately plain (no line search, no spectral start): it shows what the landscape does to
    the simplest method. Stops after ``steps`` steps or when the loss is below ``tol``.
    """
    _check_tasks(M)
    if not (lr > 0 and math.isfinite(lr)):
        raise MetanbError(f"lr must be a positive finite number, got {lr}")
    objective = lora_ml_objective(as_moments(M), symmetric=True)
    A, U = A0.clone(), U0.clone()
    trace = DescentTrace(A=A, U=U)
    for _ in range(steps):
        loss, (gA, gU) = objective([A, U])
        trace.loss.append(float(loss))
        trace.u_norm.append(float(U.norm()))
        if trace.loss[-1] < tol or not math.isfinite(trace.loss[-1]):
            break
        A, U = A - lr * gA, U - lr * gU
    trace.A, trace.U = A, U
    return trace


def family_tangent(A_star: Tensor, U_star: Tensor, theta: float) -> Tensor:
    """``d/dθ`` of the T = 2 family point ``(A(θ), U(θ))`` as a flat vector: since
    ``U_1' = U_2(θ)`` and ``U_2' = U_1(θ)``, it is ``(−(U_1U_2ᵀ + U_2U_1ᵀ), U_2, U_1)``."""
    _, U = two_task_family(A_star, U_star, theta)
    dA = -(U[0] @ U[1].T + U[1] @ U[0].T)
    return flatten(dA, torch.stack([U[1], U[0]]))


def third_task_profile(truth: GroundTruth, thetas: np.ndarray) -> np.ndarray:
    """The T = 3 loss along the T = 2 family of tasks 1, 2: with ``(A(θ), U_1(θ), U_2(θ))``
    fixed and ``U_3`` chosen best, it is ``(1/3) · floor_3(A(θ))`` (Eckart-Young for task 3).
    Zero only where the family meets a T = 3 minimiser (``θ = 0`` for generic tasks, 3k ≤ d)."""
    if truth.tasks < 3:
        raise MetanbError(f"third_task_profile needs a ground truth with >= 3 tasks, "
                          f"got {truth.tasks}")
    M3 = truth.task_matrices()[2]
    two = truth.first(2)
    return np.array([
        sr_floor(two_task_family(two.A_star, two.U_star, float(th))[0], M3, truth.k) / 3
        for th in thetas
    ])


@single_threaded()
def family_landings(truth: GroundTruth, seeds: range | list[int]) -> dict[str, np.ndarray]:
    """Where LoRA-ML from random initialisations lands on the T = 2, k = 1 family.

    Keys (one entry per seed): theta (boost angle), loss, defect (‖L J Lᵀ − J‖_F), residual
    (of ``W = W* L``), rel_error (‖A − A*‖/‖A*‖).
    """
    if truth.tasks != 2 or truth.k != 1:
        raise MetanbError(
            f"family_landings needs T = 2 tasks of rank k = 1, got T={truth.tasks}, k={truth.k}"
        )
    M = truth.task_matrices()
    keys = ("theta", "loss", "defect", "residual", "rel_error")
    out: dict[str, list[float]] = {key: [] for key in keys}
    for seed in seeds:
        fit = lora_ml(M, 1, init="random", seed=seed)
        L, residual = lorentz_coordinates(truth.U_star, fit.U)
        out["theta"].append(boost_angle(L))
        out["loss"].append(fit.loss)
        out["defect"].append(lorentz_defect(L))
        out["residual"].append(residual)
        out["rel_error"].append(float((fit.A - truth.A_star).norm() / truth.A_star.norm()))
    return {key: np.array(values) for key, values in out.items()}


def valley_section(
    truth: GroundTruth, thetas: np.ndarray, offsets: np.ndarray
) -> dict[str, np.ndarray]:
    """The T = 2 loss on a 2-d slice through the valley: the point ``family(θ) + s v``, with v
    the unit Hessian eigenvector of largest curvature at ``θ = 0`` (across the valley).

    Keys: thetas, offsets, loss [offset, θ], curvature (that largest eigenvalue: the loss is
    ``≈ ½ curvature s²`` across the valley at θ = 0 and exactly 0 along it).
    """
    if truth.tasks != 2:
        raise MetanbError(f"valley_section needs T = 2 tasks, got {truth.tasks}")
    M = truth.task_matrices()
    A0, U0 = two_task_family(truth.A_star, truth.U_star, 0.0)
    evals, evecs = torch.linalg.eigh(lora_ml_hessian(M, A0, U0))
    v = evecs[:, -1]
    objective = lora_ml_objective(as_moments(M), symmetric=True)
    d, k = truth.d, truth.k
    loss = np.zeros((len(offsets), len(thetas)))
    for j, theta in enumerate(thetas):
        base = flatten(*two_task_family(truth.A_star, truth.U_star, float(theta)))
        for i, s in enumerate(offsets):
            loss[i, j] = float(objective(list(unflatten(base + float(s) * v, d, 2, k)))[0])
    return {"thetas": np.asarray(thetas), "offsets": np.asarray(offsets), "loss": loss,
            "curvature": np.array(float(evals[-1]))}
