"""LoRA-ML among meta-learning methods, in the linear model of :mod:`metanb.linear`.

Every method below learns a base from the T retraining tasks, then adapts it to a new task
``M_new = A_star + U Uᵀ`` with m samples; they differ in *what the inner loop may change and how
it is solved*:

- **MAML** {cite}`finn2017maml`: ``s`` gradient steps of size α on *all* parameters, from the
  learned initialisation ``A``. In this model ``B_s = A G^s + const`` with ``G = I − 2α xx`` (the
  support risk is quadratic), so the exact second-order meta-gradient is the query gradient
  times ``G^s``: cheap, no Hessian-vector products needed (:func:`maml_objective`).
- **First-order MAML and Reptile** {cite}`nichol2018reptile`: drop the ``G^s`` factor, or move
  ``A`` toward the adapted ``B_s`` (:func:`fomaml_direction`, :func:`reptile_direction`).
  With one inner step Reptile's direction is −α times SR's gradient.
- **ANIL** {cite}`raghu2020anil`: adapt only a head. Here the model is ``A + H Φᵀ``: the body
  (``A`` and a d×r representation Φ) is shared and frozen, the head ``H`` (d×r) is per task. A
  linear head is a least-squares problem, so we solve it exactly instead of taking steps.
- **ADAPTREP-style** {cite}`chua2021finetuning`: the representation is fine-tuned too, at a price:
  ``A + H (Φ + Δ)ᵀ`` with penalty ``λ ‖H Δᵀ‖_F²`` (the change of the model due to moving the
  representation; scale-free, unlike ``‖Δ‖²``, because ``H Φᵀ`` is unchanged by ``H → cH,
  Φ → Φ/c``). λ → ∞ is ANIL; λ = 0 is asymmetric rank-r LoRA-ML.

Why these and not more: they span the axes that matter for the theory (isotropic full-parameter
inner loops vs structured low-rank ones; exact vs few-step inner solves). The shared fact behind
the comparison: an inner loop of gradient steps on *all* parameters is rotation invariant, so in
expectation over support sets its meta-objective is a positive multiple of SR's plus a constant,
and its minimiser is SR's base (the proposition of chapter 9); a low-rank inner loop is what
singles out ``A_star``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from metanb.errors import MetanbError
from metanb.linear.data import (
    DataOrMatrix,
    Moments,
    TaskData,
    as_moments,
    population_excess_error,
    risk,
    risk_grad,
    sample_task_data,
)
from metanb.linear.finetune import finetune_adapter, residual_moments
from metanb.linear.ground_truth import child_generator, make_ground_truth, sample_new_task
from metanb.linear.lora_ml import lora_ml, residual_cross
from metanb.linear.lowrank import check_rank
from metanb.linear.optim import minimise, single_threaded
from metanb.linear.run import (
    STREAM_FINETUNE_DATA,
    STREAM_INIT,
    STREAM_NEW_TASK,
    STREAM_RETRAIN_DATA,
)
from metanb.linear.standard import standard_retraining
from metanb.seeding import derive_seed

LossAndGrads = Callable[[Sequence[Tensor]], tuple[Tensor, list[Tensor]]]


# ---- MAML's inner loop ------------------------------------------------------------------------

@dataclass(frozen=True)
class InnerLoop:
    """``steps`` plain gradient steps of size ``step`` on the support risk, from the base.

    With ``E[x xᵀ] = I`` one step shrinks the residual ``M − B`` by ``1 − 2·step``; a step above
    ``1 / λ_max(xx)`` diverges, and few-sample covariances have large λ_max (about
    ``(1 + √(d/m))²``), which is why small steps are the safe default.
    """

    step: float = 0.15
    steps: int = 5

    def __post_init__(self) -> None:
        if not self.step > 0 or not math.isfinite(self.step):
            raise MetanbError(f"inner-loop step must be a positive number, got {self.step}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise MetanbError(f"inner-loop steps must be an integer >= 0, got {self.steps!r}")


def _stacked(m: Moments) -> Moments:
    """Moments of one task (d, d) as a stack of one task, so every function takes stacks."""
    if m.xy.ndim == 3:
        return m
    if m.xy.ndim != 2:
        raise MetanbError(f"expected moments of one task (d, d) or a stack (T, d, d), "
                          f"got shape {tuple(m.xy.shape)}")
    return Moments(xx=m.xx[None], xy=m.xy[None], yy=m.yy.reshape(1), n=m.n)


def inner_loop(A: Tensor, data_or_M: DataOrMatrix, loop: InnerLoop) -> Tensor:
    """The adapted models ``B_s`` (T, d, d) after ``loop.steps`` gradient steps on each task's
    risk, all started at the shared base ``A`` (d, d)."""
    m = _stacked(as_moments(data_or_M))
    B = A.expand(m.xy.shape).clone()
    for _ in range(loop.steps):
        B = B - loop.step * risk_grad(B, m)
    return B


def maml_objective(support: DataOrMatrix, query: DataOrMatrix, loop: InnerLoop) -> LossAndGrads:
    """``[A] -> (L, [∂L/∂A])`` for ``L(A) = (1/T) Σ_t risk_query,t(B_s,t(A))``, exact second order.

    ``B_{j+1} = B_j (I − 2α xx_t) + 2α xy_tᵀ`` is affine in ``A``: ``B_s = A G_tˢ + c_t`` with the
    symmetric ``G_t = I − 2α xx_t`` of the support set, so ``∂L/∂A = (1/T) Σ_t ∇risk_q(B_s) G_tˢ``.
    """
    ms, mq = _stacked(as_moments(support)), _stacked(as_moments(query))
    if ms.xy.shape != mq.xy.shape:
        raise MetanbError(f"support and query must hold the same tasks: shapes "
                          f"{tuple(ms.xy.shape)} and {tuple(mq.xy.shape)}")
    eye = torch.eye(ms.xx.shape[-1], dtype=ms.xx.dtype)
    G = eye - 2 * loop.step * ms.xx

    def loss_and_grads(params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        (A,) = params
        B = inner_loop(A, ms, loop)
        g = risk_grad(B, mq) / B.shape[0]
        for _ in range(loop.steps):
            g = g @ G
        return risk(B, mq).mean(), [g.sum(0)]

    return loss_and_grads


def fomaml_direction(A: Tensor, support: DataOrMatrix, query: DataOrMatrix,
                     loop: InnerLoop) -> Tensor:
    """First-order MAML's update direction: the query gradient at ``B_s``, without ``G^s``."""
    mq = _stacked(as_moments(query))
    return risk_grad(inner_loop(A, support, loop), mq).mean(0)


def reptile_direction(A: Tensor, data_or_M: DataOrMatrix, loop: InnerLoop) -> Tensor:
    """Reptile's update direction ``(1/T) Σ_t (B_s,t − A)``: toward the adapted models."""
    return (inner_loop(A, data_or_M, loop) - A).mean(0)


def split_support_query(data: TaskData, support_fraction: float = 0.5) -> tuple[TaskData, TaskData]:
    """The first ``support_fraction`` of each task's samples for the inner loop, the rest to
    evaluate it (MAML's outer loss must not see the samples the inner loop fitted)."""
    if not 0 < support_fraction < 1:
        raise MetanbError(f"support_fraction must be in (0, 1), got {support_fraction}")
    cut = int(round(data.n * support_fraction))
    if cut < 1 or cut >= data.n:
        raise MetanbError(f"{data.n} samples per task cannot be split {support_fraction:g} : "
                          f"{1 - support_fraction:g} with both parts non-empty")
    return (TaskData(data.X[..., :cut, :], data.Y[..., :cut, :]),
            TaskData(data.X[..., cut:, :], data.Y[..., cut:, :]))


@dataclass
class MetaResult:
    """A meta-learned base ``A`` (d, d), the final meta-loss, and the loss at each evaluation."""

    A: Tensor
    loss: float
    history: list[float] = field(default_factory=list)


@single_threaded()
def maml(data: TaskData, loop: InnerLoop = InnerLoop(), support_fraction: float = 0.5,
         max_iter: int = 500) -> MetaResult:
    """MAML from ``A = 0``: L-BFGS on :func:`maml_objective` over a support/query split.

    The objective is a convex quadratic in ``A`` here, so the start does not matter.
    """
    support, query = split_support_query(data, support_fraction)
    objective = maml_objective(support, query, loop)
    d = data.X.shape[-1]
    (A,), history = minimise([torch.zeros(d, d, dtype=data.X.dtype)], objective,
                             max_iter=max_iter)
    return MetaResult(A=A, loss=float(objective([A])[0]), history=history)


@single_threaded()
def reptile(data_or_M: DataOrMatrix, loop: InnerLoop = InnerLoop(), lr: float = 1.0,
            tol: float = 1e-10, max_iter: int = 10_000) -> MetaResult:
    """Batch Reptile from ``A = 0``: ``A ← A + lr · reptile_direction(A)`` until the direction's
    norm is ``≤ tol`` (each inner loop uses all of a task's samples; the original samples
    minibatches, whose average direction this is). ``loss`` is the final direction's norm."""
    m = _stacked(as_moments(data_or_M))
    if not lr > 0:
        raise MetanbError(f"Reptile's outer learning rate must be positive, got {lr}")
    A = torch.zeros(m.xy.shape[-2:], dtype=m.xy.dtype)
    history: list[float] = []
    for _ in range(max_iter):
        direction = reptile_direction(A, m, loop)
        history.append(float(direction.norm()))
        if history[-1] <= tol:
            break
        A = A + lr * direction
    return MetaResult(A=A, loss=history[-1], history=history)


# ---- a shared representation and per-task heads: ANIL and ADAPTREP ---------------------------

@dataclass
class RepresentationResult:
    """Base ``A`` (d, d), representation ``Phi`` (d, r), heads ``H`` (T, d, r), and for
    ADAPTREP the per-task representations ``V`` (T, d, r) (None for ANIL: ``V_t = Phi``)."""

    A: Tensor
    Phi: Tensor
    H: Tensor
    V: Tensor | None
    loss: float
    history: list[float] = field(default_factory=list)

    @property
    def task_matrices(self) -> Tensor:
        V = self.Phi if self.V is None else self.V
        return self.A + self.H @ V.transpose(-1, -2)


def anil_objective(m: Moments) -> LossAndGrads:
    """``[A, Phi, H] -> (L, grads)`` for ``L = (1/T) Σ_t risk_t(A + H_t Φᵀ)``; with
    ``G_t = ∇risk_t / T``: ``∂A = Σ G_t``, ``∂Φ = Σ G_tᵀ H_t``, ``∂H_t = G_t Φ``."""

    def loss_and_grads(params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        A, Phi, H = params
        B = A + H @ Phi.T
        G = risk_grad(B, m) / B.shape[0]
        return risk(B, m).mean(), [G.sum(0), (G.transpose(-1, -2) @ H).sum(0), G @ Phi]

    return loss_and_grads


def adaptrep_objective(m: Moments, penalty: float) -> LossAndGrads:
    """``[A, Phi, H, V] -> (L, grads)`` for
    ``L = (1/T) Σ_t [risk_t(A + H_t V_tᵀ) + λ ‖D_t‖²]``, ``D_t = H_t (V_t − Φ)ᵀ``."""

    def loss_and_grads(params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        A, Phi, H, V = params
        T = H.shape[0]
        B = A + H @ V.transpose(-1, -2)
        G = risk_grad(B, m) / T
        W = V - Phi
        D = H @ W.transpose(-1, -2)
        P = 2 * penalty * D / T  # ∂(λ‖D‖²/T)/∂D
        loss = risk(B, m).mean() + penalty * (D**2).sum((-1, -2)).mean()
        Pt = P.transpose(-1, -2)
        grads = [G.sum(0), -(Pt @ H).sum(0), G @ V + P @ W, G.transpose(-1, -2) @ H + Pt @ H]
        return loss, grads

    return loss_and_grads


def _check_penalty(penalty: float) -> None:
    if not penalty >= 0 or not math.isfinite(penalty):
        raise MetanbError(f"penalty must be a finite number >= 0, got {penalty}")


def _task_stack(data_or_M: DataOrMatrix, name: str) -> Moments:
    m = as_moments(data_or_M)
    if m.xy.ndim != 3:
        raise MetanbError(f"{name} needs a stack of tasks: matrices (T, d, d) or data (T, n, d)")
    return m


def _spectral_representation(A: Tensor, m: Moments, width: int) -> tuple[Tensor, Tensor]:
    """``Φ`` = top-r right singular directions of all tasks' residuals from ``A``, heads ``R_t Φ``
    (the exact ANIL minimiser in the population, given ``A``; a start otherwise)."""
    R = residual_cross(A, m)  # M_t − A in the population
    _, evecs = torch.linalg.eigh((R.transpose(-1, -2) @ R).sum(0))
    Phi = evecs[:, -width:].flip(-1).contiguous()
    return Phi, R @ Phi


@single_threaded()
def anil(data_or_M: DataOrMatrix, width: int, max_iter: int = 2000) -> RepresentationResult:
    """ANIL with the head solved exactly: minimise ``(1/T) Σ_t risk_t(A + H_t Φᵀ)`` jointly
    (L-BFGS from SR's base and the spectral representation). ``A`` is identified only on the
    complement of ``range Φ``: the heads absorb the rest, so only ``A + H Φᵀ`` is meaningful."""
    m = _task_stack(data_or_M, "anil")
    check_rank(width, m.xy.shape[-1])
    A0 = standard_retraining(m)
    Phi0, H0 = _spectral_representation(A0, m, width)
    objective = anil_objective(m)
    (A, Phi, H), history = minimise([A0, Phi0, H0], objective, max_iter=max_iter)
    return RepresentationResult(A, Phi, H, None, float(objective([A, Phi, H])[0]), history)


@single_threaded()
def adaptrep(data_or_M: DataOrMatrix, width: int, penalty: float, max_iter: int = 500,
             tol_grad: float = 1e-7) -> RepresentationResult:
    """ADAPTREP-style meta-learning (module doc): minimise :func:`adaptrep_objective` from the
    ANIL solution with ``V_t = Φ`` (so λ = ∞ stays there)."""
    _check_penalty(penalty)
    m = _task_stack(data_or_M, "adaptrep")
    start = anil(m, width, max_iter=max_iter)
    V0 = start.Phi.expand(start.H.shape).clone()
    objective = adaptrep_objective(m, penalty)
    params, history = minimise([start.A, start.Phi, start.H, V0], objective, max_iter=max_iter,
                               tol_grad=tol_grad)
    return RepresentationResult(*params, loss=float(objective(params)[0]), history=history)


def _one_task(data_or_M: DataOrMatrix, name: str) -> Moments:
    m = as_moments(data_or_M)
    if m.xy.ndim != 2:
        raise MetanbError(f"{name} adapts one task: a matrix (d, d) or data (n, d)")
    return m


def least_squares_head(A: Tensor, Phi: Tensor, data_or_M: DataOrMatrix) -> Tensor:
    """The head ``H`` (d, r) minimising ``risk(A + H Φᵀ)`` on one task: least squares of the
    residual ``y − A x`` on the features ``z = Φᵀ x`` (minimum norm if under-determined)."""
    m = residual_moments(A, _one_task(data_or_M, "least_squares_head"))
    zz = Phi.T @ m.xx @ Phi  # E[z zᵀ]
    zy = Phi.T @ m.xy  # E[z ỹᵀ]
    return torch.linalg.lstsq(zz, zy, driver="gelsd").solution.T


def finetune_head(A: Tensor, Phi: Tensor, data_or_M: DataOrMatrix) -> Tensor:
    """ANIL's adaptation of a new task: the update ``H Φᵀ`` of :func:`least_squares_head`."""
    return least_squares_head(A, Phi, data_or_M) @ Phi.T


@single_threaded()
def finetune_adaptrep(A: Tensor, Phi: Tensor, data_or_M: DataOrMatrix, penalty: float,
                      max_iter: int = 100, tol_grad: float = 1e-7) -> Tensor:
    """ADAPTREP's adaptation: minimise ``risk(A + H Vᵀ) + λ ‖H (V − Φ)ᵀ‖²`` over the head and
    the representation from (least-squares head, ``V = Φ``). Returns ``H Vᵀ``.

    L-BFGS is capped at ``max_iter`` steps: the problem is ill-conditioned (with m < d samples
    it has flat directions), the cap keeps the chapter's grid fast, and the error it leaves is
    small for m ≳ d; below that, where the solver stops is part of the method."""
    _check_penalty(penalty)
    m = _one_task(data_or_M, "finetune_adaptrep")
    H0 = least_squares_head(A, Phi, m)[None]
    objective = adaptrep_objective(_stacked(m), penalty)

    def loss_and_grads(params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        loss, grads = objective([A, Phi, *params])
        return loss, grads[2:]

    (H, V), _ = minimise([H0, Phi[None].clone()], loss_and_grads, max_iter=max_iter,
                         tol_grad=tol_grad)
    return (H @ V.transpose(-1, -2))[0]


# ---- the comparison ---------------------------------------------------------------------------

METHODS = ("sr", "lora_ml", "maml", "reptile", "anil", "adaptrep")
LABELS = {
    "sr": "SR + LoRA",
    "lora_ml": "LoRA-ML + LoRA",
    "maml": "MAML (its inner loop)",
    "reptile": "Reptile (its inner loop)",
    "anil": "ANIL (head only)",
    "adaptrep": "ADAPTREP-style (head + rep.)",
}


def _stream(seed: int, *keys: int) -> torch.Generator:
    """A generator for one named stream (run seed, stream, new task, sample size ...)."""
    return torch.Generator().manual_seed(derive_seed(seed, "meta-learning", *keys))


@dataclass(frozen=True)
class MetaGrid:
    """Sizes of chapter 9's comparison (chapters 3-4's d, k, T, σ; finite retraining data)."""

    d: int = 20
    k: int = 2
    tasks: int = 5
    sigma: float = 1.0
    retrain_samples: int = 1000  # per task; MAML splits them support : query = 1 : 1
    loop: InnerLoop = InnerLoop()
    penalty: float = 0.1  # ADAPTREP's λ
    new_tasks: int = 3  # fresh tasks per seed, averaged
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    finetune_samples: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000, 5000)


GRID = MetaGrid()

Adapt = Callable[[DataOrMatrix], Tensor]  # data (or M_new) -> tuned model matrix


def fit_methods(data: TaskData, grid: MetaGrid, seed: int) -> tuple[dict[str, Tensor],
                                                                     dict[str, Adapt]]:
    """Meta-train every method on the same retraining data. Returns each method's base ``A``
    and its adaptation rule (new-task data or matrix -> tuned model matrix)."""
    A_sr = standard_retraining(data)
    A_ml = lora_ml(data, grid.k, seed=child_generator(seed, STREAM_INIT)).A
    A_maml = maml(data, grid.loop).A
    A_rep = reptile(data, grid.loop).A
    an = anil(data, grid.k)
    ar = adaptrep(data, grid.k, grid.penalty)

    def lora(A: Tensor) -> Adapt:
        return lambda new: A + finetune_adapter(A, new, grid.k, seed=seed).delta

    def steps(A: Tensor) -> Adapt:
        return lambda new: inner_loop(A, new, grid.loop)[0]

    bases = {"sr": A_sr, "lora_ml": A_ml, "maml": A_maml, "reptile": A_rep, "anil": an.A,
             "adaptrep": ar.A}
    adapt = {
        "sr": lora(A_sr), "lora_ml": lora(A_ml), "maml": steps(A_maml), "reptile": steps(A_rep),
        "anil": lambda new: an.A + finetune_head(an.A, an.Phi, new),
        "adaptrep": lambda new: ar.A + finetune_adaptrep(ar.A, ar.Phi, new, grid.penalty),
    }
    return bases, adapt


@single_threaded()
def meta_learning_comparison(grid: MetaGrid = GRID, progress: bool = True) -> dict[str, Any]:
    """Fine-tuning error on fresh tasks vs fine-tuning samples m, every method adapting its own
    way. Keys: samples, methods, labels, error {method: [seed, m]} and floor {method: [seed]}
    (population excess error ``‖B − M_new‖_F²`` at m samples and at m = ∞, averaged over
    ``grid.new_tasks`` fresh tasks), rel_error {method: [seed]} (‖Â − A*‖/‖A*‖; for ANIL and
    ADAPTREP only the part of Â off range Φ is identified), unadapted [seed] (SR's base used as
    it is: the best single model for all tasks, the bar any adaptation must clear), seeds, and
    the grid's sizes."""
    ms = np.array(grid.finetune_samples)
    S, J = len(grid.seeds), len(ms)
    error = {name: np.zeros((S, J)) for name in METHODS}
    floor = {name: np.zeros(S) for name in METHODS}
    rel = {name: np.zeros(S) for name in METHODS}
    unadapted = np.zeros(S)
    for i, seed in enumerate(tqdm(grid.seeds, desc="meta-learning", disable=not progress,
                                  leave=False)):
        truth = make_ground_truth(grid.d, grid.k, grid.tasks, seed)
        data = sample_task_data(truth.task_matrices(), grid.retrain_samples, grid.sigma,
                                child_generator(seed, STREAM_RETRAIN_DATA))
        bases, adapt = fit_methods(data, grid, seed)
        for name, A in bases.items():
            rel[name][i] = float((A - truth.A_star).norm() / truth.A_star.norm())
        for task in range(grid.new_tasks):
            M_new = sample_new_task(truth, _stream(seed, STREAM_NEW_TASK, task))[0]
            unadapted[i] += population_excess_error(bases["sr"], M_new) / grid.new_tasks
            for name in METHODS:
                floor[name][i] += population_excess_error(adapt[name](M_new), M_new)
            for j, n in enumerate(ms):
                new = sample_task_data(M_new, int(n), grid.sigma,
                                       _stream(seed, STREAM_FINETUNE_DATA, task, int(n)))
                for name in METHODS:
                    error[name][i, j] += population_excess_error(adapt[name](new), M_new)
    for name in METHODS:
        error[name] /= grid.new_tasks
        floor[name] /= grid.new_tasks
    return {"samples": ms, "methods": METHODS, "labels": LABELS, "error": error, "floor": floor,
            "rel_error": rel, "unadapted": unadapted, "seeds": np.array(grid.seeds),
            "d": grid.d, "k": grid.k,
            "tasks": grid.tasks, "sigma": grid.sigma, "retrain_samples": grid.retrain_samples,
            "new_tasks": grid.new_tasks, "step": grid.loop.step, "steps": grid.loop.steps,
            "penalty": grid.penalty}
