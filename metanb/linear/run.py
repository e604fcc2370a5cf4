"""One end-to-end run of the linear theory: retrain (SR or LoRA-ML), then fine-tune a fresh task.

This is what ``python -m metanb linear ...`` prints, and what the assignments call.
"""

from __future__ import annotations

import math
from typing import Any

from metanb.errors import MetanbError
from metanb.linear.data import check_samples, population_excess_error, sample_task_data
from metanb.linear.finetune import finetune_adapter
from metanb.linear.ground_truth import (
    check_dims,
    child_generator,
    make_ground_truth,
    sample_new_task,
)
from metanb.linear.lora_ml import lora_ml
from metanb.linear.lowrank import check_rank, lora_ml_rate, sr_floor
from metanb.linear.optim import single_threaded
from metanb.linear.standard import sr_limit, standard_retraining

METHODS = ("sr", "lora-ml")
ADAPTERS = ("symmetric", "asymmetric")

# independent random streams of one run (see child_generator)
STREAM_RETRAIN_DATA, STREAM_NEW_TASK, STREAM_FINETUNE_DATA, STREAM_INIT = 1, 2, 3, 4


def samples_label(n: float) -> int | str:
    """JSON-friendly sample count: an int, or the string ``"inf"``."""
    return "inf" if math.isinf(n) else int(n)


@single_threaded()
def run_linear(
    method: str,
    d: int,
    k: int,
    tasks: int,
    rank: int | None = None,
    samples: float = math.inf,
    finetune_samples: float = math.inf,
    seed: int = 0,
    sigma: float = 1.0,
    adapter: str = "symmetric",
) -> dict[str, Any]:
    """Retrain on ``tasks`` tasks with ``samples`` per task, fine-tune a rank-``rank`` adapter on a
    fresh task from ``finetune_samples`` samples, and report errors next to the closed forms.

    ``rank`` (default k) is the rank of every adapter: LoRA-ML's retraining adapters and the
    fine-tuning adapter. Keys: method, d, k, tasks, rank, samples, finetune_samples, seed, sigma,
    adapter, base_rel_error (‖Â − A*‖_F/‖A*‖_F), base_loss, finetune_excess_error (‖Â + ΔŴ −
    M_new‖_F², population), finetune_floor (best rank-r fit from Â, the n = ∞ limit of the
    previous), sr_floor_theory (the same floor from SR's population limit), lora_ml_rate_theory
    (σ² p / m from the true base; 0 for m = ∞).
    """
    if method not in METHODS:
        raise MetanbError(f"method must be one of {METHODS}, got {method!r}")
    if adapter not in ADAPTERS:
        raise MetanbError(f"adapter must be one of {ADAPTERS}, got {adapter!r}")
    check_dims(d, k, tasks)
    rank = k if rank is None else rank
    check_rank(rank, d)
    check_samples(samples, "samples")
    check_samples(finetune_samples, "finetune samples")
    if sigma < 0:
        raise MetanbError(f"sigma must be >= 0, got {sigma}")
    symmetric = adapter == "symmetric"

    truth = make_ground_truth(d, k, tasks, seed)
    M = truth.task_matrices()
    retrain_data = (
        M if math.isinf(samples)
        else sample_task_data(M, int(samples), sigma, child_generator(seed, STREAM_RETRAIN_DATA))
    )
    if method == "sr":
        A_hat, base_loss = standard_retraining(retrain_data), math.nan
    else:
        fit = lora_ml(retrain_data, rank, symmetric=symmetric,
                      seed=child_generator(seed, STREAM_INIT))
        A_hat, base_loss = fit.A, fit.loss

    M_new, _ = sample_new_task(truth, child_generator(seed, STREAM_NEW_TASK))
    ft_data = (
        M_new if math.isinf(finetune_samples)
        else sample_task_data(
            M_new, int(finetune_samples), sigma, child_generator(seed, STREAM_FINETUNE_DATA)
        )
    )
    tuned = finetune_adapter(A_hat, ft_data, rank, symmetric=symmetric,
                             seed=child_generator(seed, STREAM_INIT))
    return {
        "method": method,
        "d": d,
        "k": k,
        "tasks": tasks,
        "rank": rank,
        "samples": samples_label(samples),
        "finetune_samples": samples_label(finetune_samples),
        "seed": seed,
        "sigma": sigma,
        "adapter": adapter,
        "base_rel_error": float((A_hat - truth.A_star).norm() / truth.A_star.norm()),
        "base_loss": None if math.isnan(base_loss) else base_loss,
        "finetune_excess_error": population_excess_error(A_hat + tuned.delta, M_new),
        "finetune_floor": sr_floor(A_hat, M_new, rank, symmetric),
        "sr_floor_theory": sr_floor(sr_limit(truth.A_star, truth.U_star), M_new, rank, symmetric),
        "lora_ml_rate_theory": lora_ml_rate(d, rank, finetune_samples, sigma, symmetric),
    }
