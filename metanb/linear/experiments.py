"""The figure grid of the linear-theory chapters (3: why SR fails, 4: LoRA-ML), as plain data.

Every function takes the shared :data:`GRID` (chapters and ``benchmarks/linear.py`` run the same
sizes), loops over seeds, and returns a dict of NumPy arrays that :mod:`metanb.plots.linear` draws.
Conventions: arrays indexed ``[seed, x]``; retraining is at the population (n = ∞) unless a key
says otherwise; "excess error" is the population excess risk ``‖Â + ΔŴ − M_new‖_F²`` on a fresh
task; ``rel_error`` is ``‖Â − A_star‖_F / ‖A_star‖_F``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metanb.linear.data import population_excess_error, sample_task_data
from metanb.linear.family import boost_angle, lorentz_coordinates, lorentz_defect, two_task_family
from metanb.linear.finetune import finetune_adapter
from metanb.linear.ground_truth import (
    GroundTruth,
    child_generator,
    make_ground_truth,
    sample_new_task,
)
from metanb.linear.lora_ml import lora_ml
from metanb.linear.lowrank import adapter_dim, lora_ml_rate, sr_floor
from metanb.linear.optim import single_threaded
from metanb.linear.run import (
    STREAM_FINETUNE_DATA,
    STREAM_INIT,
    STREAM_NEW_TASK,
    STREAM_RETRAIN_DATA,
)
from metanb.linear.standard import sr_limit, standard_retraining


@dataclass(frozen=True)
class LinearGrid:
    """Sizes of every linear-theory figure (one place, so book and benchmark agree)."""

    d: int = 20
    k: int = 2
    tasks: int = 5  # T in the SR-vs-LoRA-ML comparisons
    sigma: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    # SR's limit: retraining samples per task, and the T values of the shift's spectrum
    sr_samples: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000, 5000)
    spectrum_tasks: tuple[int, ...] = (1, 2, 3, 5)
    # fine-tuning samples of the fresh task (floor-vs-n and rate figures)
    finetune_samples: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000, 5000, 10000)
    # LoRA-ML recovery vs T, at the population and with finitely many samples per task
    recovery_tasks: tuple[int, ...] = (1, 2, 3, 5)
    recovery_samples: int = 2000
    # the T = 2 family: k = 1 makes it a single curve A(θ)
    family_k: int = 1
    family_seed: int = 0
    family_inits: tuple[int, ...] = (0, 9)
    family_thetas: tuple[float, float, int] = (-0.5, 0.5, 101)
    # the k d / n rate: several k, more seeds
    rate_ks: tuple[int, ...] = (1, 2, 4)
    rate_seeds: tuple[int, ...] = tuple(range(12))
    rate_samples: tuple[int, ...] = (200, 500, 1000, 2000, 5000, 10000)
    # rank misspecification: adapter ranks r (true rank k), fine-tuning samples
    ranks: tuple[int, ...] = (1, 2, 3, 4)
    misspec_samples: int = 1000


GRID = LinearGrid()


def _rel(A_hat: torch.Tensor, truth: GroundTruth) -> float:
    return float((A_hat - truth.A_star).norm() / truth.A_star.norm())


def _new_task(truth: GroundTruth, seed: int) -> torch.Tensor:
    return sample_new_task(truth, child_generator(seed, STREAM_NEW_TASK))[0]


def _finetune_error(A, M_new, n, rank, grid: LinearGrid, seed: int, symmetric=True) -> float:
    data = M_new if math.isinf(n) else sample_task_data(
        M_new, int(n), grid.sigma, child_generator(seed * 1000 + int(n), STREAM_FINETUNE_DATA)
    )
    adapter = finetune_adapter(A, data, rank, symmetric=symmetric, seed=seed)
    return population_excess_error(A + adapter.delta, M_new)


def _bar(items, progress: bool, desc: str):
    return tqdm(items, desc=desc, disable=not progress, leave=False)


@single_threaded()
def sr_limit_experiment(grid: LinearGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """SR from n samples per task converges to ``sr_limit``, not to ``A_star``; the shift has
    rank T k. Keys: samples, dist_to_limit / dist_to_star [seed, n] (Frobenius),
    predicted_gap [seed] (‖sr_limit − A_star‖_F), spectrum_tasks, spectrum {T: [seed, d]}
    (singular values of sr_limit − A_star, descending)."""
    ns = np.array(grid.sr_samples)
    to_limit = np.zeros((len(grid.seeds), len(ns)))
    to_star = np.zeros_like(to_limit)
    gap = np.zeros(len(grid.seeds))
    spectrum = {T: np.zeros((len(grid.seeds), grid.d)) for T in grid.spectrum_tasks}
    for i, seed in enumerate(_bar(grid.seeds, progress, "SR limit")):
        truth = make_ground_truth(grid.d, grid.k, max(grid.tasks, *grid.spectrum_tasks), seed)
        for T in grid.spectrum_tasks:
            sub = truth.first(T)
            spectrum[T][i] = torch.linalg.svdvals(sr_limit(sub.A_star, sub.U_star) - sub.A_star)
        truth = truth.first(grid.tasks)
        limit = sr_limit(truth.A_star, truth.U_star)
        gap[i] = float((limit - truth.A_star).norm())
        for j, n in enumerate(ns):
            data = sample_task_data(truth.task_matrices(), int(n), grid.sigma,
                                    child_generator(seed * 1000 + int(n), STREAM_RETRAIN_DATA))
            A_hat = standard_retraining(data)
            to_limit[i, j] = float((A_hat - limit).norm())
            to_star[i, j] = float((A_hat - truth.A_star).norm())
    return {"samples": ns, "dist_to_limit": to_limit, "dist_to_star": to_star,
            "predicted_gap": gap, "spectrum_tasks": np.array(grid.spectrum_tasks),
            "spectrum": spectrum, "k": grid.k, "tasks": grid.tasks}


@single_threaded()
def floor_vs_samples_experiment(grid: LinearGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """Rank-k fine-tuning of a fresh task from SR's base and from LoRA-ML's base (both retrained
    at n = ∞ on T tasks) with m samples. Keys: samples, sr / lora_ml [seed, m] excess errors,
    sr_floor [seed] (closed form), rate [m] (σ² p / m)."""
    ms = np.array(grid.finetune_samples)
    sr = np.zeros((len(grid.seeds), len(ms)))
    ml = np.zeros_like(sr)
    floor = np.zeros(len(grid.seeds))
    for i, seed in enumerate(_bar(grid.seeds, progress, "floor vs n")):
        truth = make_ground_truth(grid.d, grid.k, grid.tasks, seed)
        M = truth.task_matrices()
        A_sr = standard_retraining(M)
        A_ml = lora_ml(M, grid.k, seed=child_generator(seed, STREAM_INIT)).A
        M_new = _new_task(truth, seed)
        floor[i] = sr_floor(A_sr, M_new, grid.k)
        for j, m in enumerate(ms):
            sr[i, j] = _finetune_error(A_sr, M_new, m, grid.k, grid, seed)
            ml[i, j] = _finetune_error(A_ml, M_new, m, grid.k, grid, seed)
    rate = np.array([lora_ml_rate(grid.d, grid.k, m, grid.sigma) for m in ms])
    return {"samples": ms, "sr": sr, "lora_ml": ml, "sr_floor": floor, "rate": rate,
            "d": grid.d, "k": grid.k, "tasks": grid.tasks, "sigma": grid.sigma}


@single_threaded()
def recovery_vs_tasks_experiment(grid: LinearGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """‖Â − A_star‖/‖A_star‖ of LoRA-ML (population and n samples per task) and of SR, for
    T in ``grid.recovery_tasks``. Keys: tasks, lora_ml / lora_ml_finite / sr [seed, T], loss
    [seed, T] (LoRA-ML's final population loss), samples."""
    Ts = np.array(grid.recovery_tasks)
    shape = (len(grid.seeds), len(Ts))
    ml, ml_n, sr, loss = (np.zeros(shape) for _ in range(4))
    for i, seed in enumerate(_bar(grid.seeds, progress, "recovery vs T")):
        full = make_ground_truth(grid.d, grid.k, int(Ts.max()), seed)
        for j, T in enumerate(Ts):
            truth = full.first(int(T))
            M = truth.task_matrices()
            fit = lora_ml(M, grid.k, seed=child_generator(seed, STREAM_INIT))
            ml[i, j], loss[i, j] = _rel(fit.A, truth), fit.loss
            sr[i, j] = _rel(standard_retraining(M), truth)
            data = sample_task_data(M, grid.recovery_samples, grid.sigma,
                                    child_generator(seed, STREAM_RETRAIN_DATA))
            ml_n[i, j] = _rel(lora_ml(data, grid.k, seed=child_generator(seed, STREAM_INIT)).A,
                              truth)
    return {"tasks": Ts, "lora_ml": ml, "lora_ml_finite": ml_n, "sr": sr, "loss": loss,
            "samples": grid.recovery_samples}


@single_threaded()
def two_task_family_experiment(grid: LinearGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """T = 2, k = ``grid.family_k``: LoRA-ML from random inits reaches different exact minimisers,
    all on the explicit family A(θ). Keys: thetas, family_rel_error / family_loss [θ],
    found_theta / found_rel_error / found_loss / found_residual / found_defect [init],
    pairwise_distance (‖A_1 − A_2‖/‖A_star‖ of the first two inits), histories (list)."""
    truth = make_ground_truth(grid.d, grid.family_k, 2, grid.family_seed)
    M = truth.task_matrices()
    thetas = np.linspace(*grid.family_thetas[:2], int(grid.family_thetas[2]))
    fam_err, fam_loss = np.zeros(len(thetas)), np.zeros(len(thetas))
    for j, theta in enumerate(thetas):
        A, U = two_task_family(truth.A_star, truth.U_star, float(theta))
        fam_err[j] = _rel(A, truth)
        fam_loss[j] = float(population_excess_error(A + U @ U.transpose(-1, -2), M).mean())
    found: dict[str, list] = {key: [] for key in ("theta", "rel_error", "loss", "residual",
                                                   "defect", "A", "history")}
    for init in _bar(grid.family_inits, progress, "T=2 inits"):
        fit = lora_ml(M, grid.family_k, init="random", seed=init)
        L, residual = lorentz_coordinates(truth.U_star, fit.U)
        for key, value in (("theta", boost_angle(L)), ("rel_error", _rel(fit.A, truth)),
                           ("loss", fit.loss), ("residual", residual),
                           ("defect", lorentz_defect(L)), ("A", fit.A),
                           ("history", np.array(fit.history))):
            found[key].append(value)
    A1, A2 = found["A"][0], found["A"][1]
    return {"thetas": thetas, "family_rel_error": fam_err, "family_loss": fam_loss,
            "found_theta": np.array(found["theta"]),
            "found_rel_error": np.array(found["rel_error"]),
            "found_loss": np.array(found["loss"]), "found_residual": np.array(found["residual"]),
            "found_defect": np.array(found["defect"]), "histories": found["history"],
            "inits": np.array(grid.family_inits),
            "pairwise_distance": float((A1 - A2).norm() / truth.A_star.norm())}


@single_threaded()
def rate_experiment(grid: LinearGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """Excess error of rank-k fine-tuning from LoRA-ML's base (T tasks, n = ∞) vs fine-tuning
    samples n, for several k. Keys: samples, ks, error {k: [seed, n]}, theory {k: [n]},
    params {k: p}, slope {k: fitted log-log slope of the mean}."""
    ns = np.array(grid.rate_samples)
    error, theory, params, slope = {}, {}, {}, {}
    for k in _bar(grid.rate_ks, progress, "rate (k)"):
        err = np.zeros((len(grid.rate_seeds), len(ns)))
        for i, seed in enumerate(grid.rate_seeds):
            truth = make_ground_truth(grid.d, k, grid.tasks, seed)
            A_ml = lora_ml(truth.task_matrices(), k, seed=child_generator(seed, STREAM_INIT)).A
            M_new = _new_task(truth, seed)
            for j, n in enumerate(ns):
                err[i, j] = _finetune_error(A_ml, M_new, n, k, grid, seed)
        error[k] = err
        theory[k] = np.array([lora_ml_rate(grid.d, k, n, grid.sigma) for n in ns])
        params[k] = adapter_dim(grid.d, k)
        slope[k] = float(np.polyfit(np.log(ns), np.log(err.mean(0)), 1)[0])
    return {"samples": ns, "ks": np.array(grid.rate_ks), "error": error, "theory": theory,
            "params": params, "slope": slope, "d": grid.d, "sigma": grid.sigma}


@single_threaded()
def rank_misspecification_experiment(
    grid: LinearGrid = GRID, progress: bool = True
) -> dict[str, Any]:
    """Adapter rank r ≠ k (same r in LoRA-ML's retraining and in fine-tuning). Keys: ranks,
    rel_error [seed, r] (LoRA-ML base), floor / finite [seed, r] (fine-tuning error at n = ∞ and
    with ``grid.misspec_samples``), sr_floor [seed, r] (SR base, n = ∞), star_floor [seed, r]
    (best rank-r fit from A_star itself: the unavoidable part), variance [r] (σ² p(r) / n)."""
    rs = np.array(grid.ranks)
    shape = (len(grid.seeds), len(rs))
    rel, floor, finite, sr, star = (np.zeros(shape) for _ in range(5))
    for i, seed in enumerate(_bar(grid.seeds, progress, "rank r")):
        truth = make_ground_truth(grid.d, grid.k, grid.tasks, seed)
        M = truth.task_matrices()
        M_new = _new_task(truth, seed)
        A_sr = standard_retraining(M)
        for j, r in enumerate(rs):
            A_ml = lora_ml(M, int(r), seed=child_generator(seed, STREAM_INIT)).A
            rel[i, j] = _rel(A_ml, truth)
            floor[i, j] = sr_floor(A_ml, M_new, int(r))
            finite[i, j] = _finetune_error(A_ml, M_new, grid.misspec_samples, int(r), grid, seed)
            sr[i, j] = sr_floor(A_sr, M_new, int(r))
            star[i, j] = sr_floor(truth.A_star, M_new, int(r))
    variance = np.array([lora_ml_rate(grid.d, int(r), grid.misspec_samples, grid.sigma)
                         for r in rs])
    return {"ranks": rs, "rel_error": rel, "floor": floor, "finite": finite, "sr_floor": sr,
            "star_floor": star, "variance": variance, "k": grid.k,
            "samples": grid.misspec_samples}


FIGURES = {
    "sr_limit": sr_limit_experiment,
    "floor_vs_samples": floor_vs_samples_experiment,
    "recovery_vs_tasks": recovery_vs_tasks_experiment,
    "two_task_family": two_task_family_experiment,
    "rate": rate_experiment,
    "rank_misspecification": rank_misspecification_experiment,
}


# ---- intuition pictures (chapter 3) and the finite-sample picture (chapter 4) ----------------
# Not in FIGURES: they take their own small sizes, not the shared GRID.


def shift_spectra(d: int = 4, k: int = 1, tasks: int = 3, seed: int = 0) -> dict[str, Any]:
    """Eigenvalues behind "the average of T rank-k shifts is a rank-Tk blob", for one population
    instance (no samples). Keys: shifts [T, d] (eigenvalues of each ``U_t U_tᵀ``), average [d]
    (of their mean, SR's shift from A_star), residual_star / residual_sr [d] (of ``M_new − A_star``
    and ``M_new − A_SR``; all symmetric, eigenvalues sorted by decreasing absolute value),
    kept_star / kept_sr [d] (bool: the eigenvalues the best rank-k PSD adapter absorbs),
    floor_star / floor_sr (``sr_floor`` of each base: what rank-k fine-tuning leaves), d, k, tasks.
    """
    truth = make_ground_truth(d, k, tasks, seed)
    P = truth.U_star @ truth.U_star.transpose(-1, -2)
    A_sr = sr_limit(truth.A_star, truth.U_star)
    M_new = _new_task(truth, seed)

    def by_size(S: torch.Tensor) -> np.ndarray:
        ev = torch.linalg.eigvalsh(S).numpy()
        return ev[np.argsort(-np.abs(ev), kind="stable")]

    def kept(ev: np.ndarray) -> np.ndarray:
        # a PSD rank-k adapter absorbs the k largest positive eigenvalues (lowrank.sr_floor)
        top = np.argsort(-ev, kind="stable")[:k]
        mask = np.zeros(len(ev), dtype=bool)
        mask[top[ev[top] > 0]] = True
        return mask

    res_star, res_sr = by_size(M_new - truth.A_star), by_size(M_new - A_sr)
    return {"shifts": np.stack([by_size(p) for p in P]), "average": by_size(P.mean(0)),
            "residual_star": res_star, "residual_sr": res_sr,
            "kept_star": kept(res_star), "kept_sr": kept(res_sr),
            "floor_star": sr_floor(truth.A_star, M_new, k), "floor_sr": sr_floor(A_sr, M_new, k),
            "d": d, "k": k, "tasks": tasks}


@single_threaded()
def finite_sample_grid(
    d: int = 10,
    k: int = 1,
    tasks: int = 3,
    retrain_samples: tuple[int, ...] = (20, 50, 200, 1000, 5000),
    finetune_samples: tuple[int, ...] = (20, 100, 500, 2500, 10000),
    seeds: tuple[int, ...] = (0, 1, 2),
    sigma: float = 1.0,
) -> dict[str, Any]:
    """The end-to-end finite-sample picture: retrain SR and LoRA-ML on n samples per task, then
    rank-k fine-tune a fresh task on m samples; every (n, m) pair, for each seed.

    Both methods see the same retraining and fine-tuning samples (seeded streams as in
    :func:`floor_vs_samples_experiment`). Keys: retrain_samples [n], finetune_samples [m],
    sr / lora_ml [seed, n, m] (population excess error on the new task), sr_floor [seed, n]
    (``sr_floor`` of SR's fitted base: no m beats it), sr_floor_population [seed] (the same from
    SR's population limit, the chapter's closed form), d, k, tasks, sigma.
    """
    grid = LinearGrid(d=d, k=k, tasks=tasks, sigma=sigma, seeds=tuple(seeds))
    ns, ms = np.array(retrain_samples), np.array(finetune_samples)
    sr = np.zeros((len(seeds), len(ns), len(ms)))
    ml = np.zeros_like(sr)
    floor = np.zeros((len(seeds), len(ns)))
    floor_pop = np.zeros(len(seeds))
    for i, seed in enumerate(seeds):
        truth = make_ground_truth(d, k, tasks, seed)
        M = truth.task_matrices()
        M_new = _new_task(truth, seed)
        floor_pop[i] = sr_floor(sr_limit(truth.A_star, truth.U_star), M_new, k)
        for a, n in enumerate(ns):
            data = sample_task_data(M, int(n), sigma,
                                    child_generator(seed * 1000 + int(n), STREAM_RETRAIN_DATA))
            A_sr = standard_retraining(data)
            A_ml = lora_ml(data, k, seed=child_generator(seed, STREAM_INIT)).A
            floor[i, a] = sr_floor(A_sr, M_new, k)
            for b, m in enumerate(ms):
                sr[i, a, b] = _finetune_error(A_sr, M_new, m, k, grid, seed)
                ml[i, a, b] = _finetune_error(A_ml, M_new, m, k, grid, seed)
    return {"retrain_samples": ns, "finetune_samples": ms, "sr": sr, "lora_ml": ml,
            "sr_floor": floor, "sr_floor_population": floor_pop, "d": d, "k": k,
            "tasks": tasks, "sigma": sigma}
