"""The shallow network of the paper: a step from the linear theory towards real networks.

Data (as the official ``shallow/`` experiment): task t's labels are
``y = cᵀ sigmoid((A* + U_t U_tᵀ) x) + noise`` with A*, U_t, c, x standard Gaussian and noise std
0.1; T retraining tasks with N samples each, and a fresh task T+1 with n fine-tuning samples.
The model is :class:`ShallowNet` (two bias-free ``nn.Linear`` layers with a sigmoid between), so
it trains with the package's one loop, :func:`metanb.retrain.retrain`: SR is method
``standard``, LoRA-ML is ``lora-ml`` with symmetric U Uᵀ adapters on the first layer. Then a
fresh rank-k adapter (3k at T = 2, as the paper) is fitted on the new task with the base frozen,
and scored by its MSE against the *clean* labels of fresh inputs.

Differences from the official code, on purpose: the loop's schedule is linear decay to 0 (no
warmup) where the official lr is constant; the adapters are U Uᵀ (the data's form) where the
official ones are B A; the test loss is measured on fresh inputs, not on the fine-tuning ones.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.seeding import derive_seed

METHODS: dict[str, str] = {"sr": "standard", "lora-ml": "lora-ml"}  # ours -> retrain's
FIRST_LAYER = "first"  # the layer that carries the adapters (target_modules)


@dataclass(frozen=True)
class ShallowSetup:
    """One shallow experiment; the defaults are the official ones (``shallow/run.py``)."""

    d: int = 10
    tasks: int = 3
    k: int = 1
    samples: int = 1000  # N, retraining samples per task
    finetune_samples: int = 100  # n
    test_samples: int = 1000  # fresh inputs of the new task that score the fine-tuned model
    noise: float = 0.1
    retrain_steps: int = 40_000
    finetune_steps: int = 15_000
    lr: float = 1e-3
    weight_decay: float = 0.01  # torch AdamW's default, which the official code keeps
    seed: int = 0
    curve_points: int = 50  # test-loss evaluations along fine-tuning (plus the final one)

    def __post_init__(self) -> None:
        counts = {"d": self.d, "tasks": self.tasks, "k": self.k, "samples": self.samples,
                  "finetune_samples": self.finetune_samples, "test_samples": self.test_samples,
                  "retrain_steps": self.retrain_steps, "finetune_steps": self.finetune_steps,
                  "curve_points": self.curve_points}
        for name, value in counts.items():
            if value < 1:
                raise MetanbError(f"{name} must be at least 1, got {value}")
        if self.finetune_rank > self.d:
            raise MetanbError(f"the fine-tuning rank {self.finetune_rank} exceeds d = {self.d}; "
                              "lower k")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise MetanbError(f"noise must be a finite number >= 0, got {self.noise}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise MetanbError(f"lr must be a finite number > 0, got {self.lr}")

    @property
    def finetune_rank(self) -> int:
        """k, or 3k at T = 2: two tasks leave a base one more rank-k step off, as the paper."""
        return 3 * self.k if self.tasks == 2 else self.k


@dataclass
class ShallowProblem:
    """The ground truth and every sample of one trial (tensors on the CPU)."""

    a_star: torch.Tensor  # (d, d)
    u: torch.Tensor  # (T + 1, d, k); the last one is the fresh task's
    c: torch.Tensor  # (d,)
    x: torch.Tensor  # (T, N, d)
    y: torch.Tensor  # (T, N), noisy
    x_finetune: torch.Tensor  # (n, d)
    y_finetune: torch.Tensor  # (n,), noisy
    x_test: torch.Tensor  # (m, d)
    y_test: torch.Tensor  # (m,), clean

    def clean(self, task: int, x: torch.Tensor) -> torch.Tensor:
        """Noise-free labels of task ``task`` (T = the fresh task) at inputs ``x``."""
        u = self.u[task]
        return torch.sigmoid(x @ (self.a_star + u @ u.T).T) @ self.c


def make_problem(setup: ShallowSetup) -> ShallowProblem:
    """Draw a trial from ``setup.seed`` alone (both methods of a seed see the same data)."""
    g = torch.Generator().manual_seed(derive_seed(setup.seed, "shallow", "problem"))
    d, T, k = setup.d, setup.tasks, setup.k

    def gauss(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    a_star, u, c = gauss(d, d), gauss(T + 1, d, k), gauss(d)
    partial = ShallowProblem(a_star, u, c, *(torch.empty(0),) * 6)
    x = gauss(T, setup.samples, d)
    y = torch.stack([partial.clean(t, x[t]) for t in range(T)])
    y = y + setup.noise * gauss(T, setup.samples)
    x_ft = gauss(setup.finetune_samples, d)
    y_ft = partial.clean(T, x_ft) + setup.noise * gauss(setup.finetune_samples)
    x_test = gauss(setup.test_samples, d)
    return ShallowProblem(a_star, u, c, x, y, x_ft, y_ft, x_test, partial.clean(T, x_test))


@dataclass
class ShallowOutput:
    """What ``retrain`` reads from a forward (``.loss``), as a Hugging Face model returns it."""

    loss: torch.Tensor | None
    predictions: torch.Tensor


class ShallowNet(nn.Module):
    """x -> cᵀ sigmoid(W x): ``first`` is W (d x d), ``head`` is c; no biases, as the data."""

    def __init__(self, d: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.first = nn.Linear(d, d, bias=False)
        self.head = nn.Linear(d, 1, bias=False)
        if generator is not None:  # torch's default init, drawn from an explicit stream
            with torch.no_grad():
                for layer in (self.first, self.head):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> ShallowOutput:
        predictions = self.head(torch.sigmoid(self.first(inputs))).squeeze(-1)
        loss = None if labels is None else nn.functional.mse_loss(predictions, labels)
        return ShallowOutput(loss, predictions)


def heldout_loss(model: nn.Module, problem: ShallowProblem) -> float:
    """MSE of ``model`` against the clean labels of the fresh task's test inputs (a model with
    one task adapter routes every example through it)."""
    from metanb.lora import multi_lora_layers, use_tasks

    x = problem.x_test
    with torch.no_grad():
        if multi_lora_layers(model):
            with use_tasks(model, torch.zeros(len(x), dtype=torch.long)):
                out = model(x)
        else:
            out = model(x)
    return float(nn.functional.mse_loss(out.predictions, problem.y_test))


class ProbedBatch(Sequence):
    """One full batch, repeated ``steps`` times, that calls ``probe(i)`` when the loop fetches
    item i for i in ``at``. ``retrain`` has no callbacks; the batch it fetches at step i is the
    moment the model holds exactly i updates, so this records a test-loss curve without a loop
    of our own."""

    def __init__(self, batch: dict[str, torch.Tensor], steps: int, at: set[int],
                 probe: Callable[[int], None]) -> None:
        self.batch, self.steps, self.at, self.probe = batch, steps, at, probe

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        if index in self.at:
            self.probe(index)
        return self.batch


def curve_steps(steps: int, points: int) -> list[int]:
    """Where the test loss is measured: ``points`` evenly spaced iterations in [0, steps)
    starting at 0 (the caller adds the final loss at ``steps``)."""
    return sorted({i * steps // points for i in range(points)})


def _loop_options(setup: ShallowSetup) -> dict[str, Any]:
    """The optimiser of the official code (full-batch AdamW, no clipping), in the loop's names."""
    return {"lr": setup.lr, "weight_decay": setup.weight_decay, "warmup": 0.0,
            "max_grad_norm": None, "device": "cpu", "symmetric": True,
            "target_modules": (FIRST_LAYER,)}


def retrain_shallow(method: str, setup: ShallowSetup, problem: ShallowProblem,
                    progress: bool = False) -> tuple[ShallowNet, list[float]]:
    """Retrain a fresh :class:`ShallowNet` on the T tasks (full batch: every step sees all of
    every task); return the base and the loop's loss per step."""
    from metanb.retrain import retrain

    if method not in METHODS:
        raise MetanbError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    init = torch.Generator().manual_seed(derive_seed(setup.seed, "shallow", "init"))
    model = ShallowNet(setup.d, init)
    tasks = [[{"inputs": problem.x[t], "labels": problem.y[t]}] for t in range(setup.tasks)]
    # scaling alpha / r = 1: the adapters add exactly U Uᵀ, the data's form
    res = retrain(model, tasks, method=METHODS[method], rank=setup.k, lora_alpha=float(setup.k),
                  steps=setup.retrain_steps, seed=setup.seed, progress=progress, inplace=True,
                  **_loop_options(setup))
    return res.model, [h["loss"] for h in res.history]


def finetune_shallow(base: nn.Module, setup: ShallowSetup, problem: ShallowProblem,
                     progress: bool = False) -> tuple[nn.Module, list[int], list[float]]:
    """Fit a fresh rank-``setup.finetune_rank`` U Uᵀ adapter on the new task's n samples with
    the base (first layer and c) frozen; return the adapted model and its test-loss curve
    (iterations, losses), the last point after the final step."""
    from metanb.retrain import retrain

    model = copy.deepcopy(base)
    steps = setup.finetune_steps
    at = curve_steps(steps, setup.curve_points)
    losses: dict[int, float] = {}
    batch = {"inputs": problem.x_finetune, "labels": problem.y_finetune}
    data = ProbedBatch(batch, steps, set(at), lambda i: losses.setdefault(i, heldout_loss(
        model, problem)))
    rank = setup.finetune_rank
    res = retrain(model, [data], method="lora-ml", rank=rank, lora_alpha=float(rank),
                  train_base=False, steps=steps, seed=derive_seed(setup.seed, "finetune") % 2**31,
                  progress=progress, inplace=True, **_loop_options(setup))
    adapted = res.with_adapters()
    losses[steps] = heldout_loss(adapted, problem)
    its = sorted(losses)
    return adapted, its, [losses[i] for i in its]


def run_shallow(method: str, setup: ShallowSetup, progress: bool = False) -> dict[str, Any]:
    """One trial: retrain with ``method``, fine-tune on the fresh task, report the numbers.

    Keys: method, the setup's fields, finetune_rank, retrain_loss (last step),
    pretrained_test_loss (the base alone on the new task),
    finetune_test_loss, curve_iterations, curve (test loss at those iterations), seconds and
    cpu_seconds (wall clock and this process's CPU time).
    """
    began, cpu_began = time.perf_counter(), time.process_time()
    problem = make_problem(setup)
    base, retrain_losses = retrain_shallow(method, setup, problem, progress)
    _, its, curve = finetune_shallow(base, setup, problem, progress)
    return {
        "method": method, **asdict(setup), "finetune_rank": setup.finetune_rank,
        "retrain_loss": retrain_losses[-1],
        "pretrained_test_loss": heldout_loss(base, problem),
        "finetune_test_loss": curve[-1],
        "curve_iterations": its, "curve": curve,
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu_began,
    }


# The figure's CPU budget (about 2 CPU minutes for d in {5, 10, 20}, T in {2, 3}, 3 trials):
# 1/50 of the official retraining steps and 1/37 of its fine-tuning steps, with a 10x larger
# lr to travel further. Not the paper's numbers; the official settings are ShallowSetup().
FIGURE_QUICK: dict[str, Any] = {"retrain_steps": 800, "finetune_steps": 400, "lr": 1e-2,
                                "curve_points": 20}


def shallow_grid(ds: Sequence[int] = (5, 10, 20), task_counts: Sequence[int] = (2, 3),
                 trials: int = 3, methods: Sequence[str] = tuple(METHODS), progress: bool = False,
                 workers: int = 1, **setup: Any) -> list[dict[str, Any]]:
    """Every (d, T, trial, method) of the paper's figure; trial i uses seed ``seed + i``, and
    both methods of a trial share its data. ``setup`` fixes the other :class:`ShallowSetup`
    fields (e.g. fewer steps). ``workers`` > 1 runs the trials in that many processes (one
    torch thread each: these nets are too small for threads to help); the records are the
    same, in the same order."""
    base_seed = int(setup.pop("seed", 0))
    jobs = [(method, ShallowSetup(d=d, tasks=T, seed=base_seed + i, **setup))
            for d in ds for T in task_counts for i in range(trials) for method in methods]
    if workers < 1:
        raise MetanbError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return [run_shallow(method, job, progress) for method, job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked copy of a process whose torch already ran threads can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(run_shallow, *zip(*jobs, strict=True)))
