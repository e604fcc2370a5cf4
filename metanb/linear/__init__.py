"""The linear theory of LoRA-ML: ground truth, data, standard retraining, LoRA-ML, fine-tuning,
and the closed-form predictions the book checks them against.

Data model (stated once; every chapter, assignment and the CLI use it):

- d×d base ``A_star`` and, for each task t = 1..T, a d×k factor ``U_star[t]``; all entries are
  i.i.d. N(0, 1/d), so ``‖A_star‖_F² ≈ d`` and ``U_t U_tᵀ`` is close to a rank-k projection.
- Task t's matrix is ``M_t = A_star + U_t U_tᵀ``. A sample is ``x ~ N(0, I_d)``,
  ``y = M_t x + ε`` with ``ε ~ N(0, σ² I_d)`` (multi-output linear regression), n per task.
- The population excess risk of a model matrix M on task t is ``E‖(M − M_t) x‖² = ‖M − M_t‖_F²``,
  so "n = ∞" means optimising Frobenius distances directly (pass the task matrices instead of
  samples to any fitting function).
- Everything is float64 torch on the CPU.
"""

from metanb.linear.data import (
    Moments,
    TaskData,
    as_moments,
    empirical_moments,
    population_excess_error,
    population_moments,
    risk,
    sample_task_data,
)
from metanb.linear.finetune import finetune_adapter
from metanb.linear.ground_truth import (
    GroundTruth,
    child_generator,
    make_ground_truth,
    sample_new_task,
    task_matrices,
)
from metanb.linear.lora_ml import LoraMLResult, lora_ml
from metanb.linear.lowrank import Adapter, adapter_dim, best_rank_r_fit, lora_ml_rate, sr_floor
from metanb.linear.run import run_linear
from metanb.linear.standard import SRResult, sr_limit, standard_retraining, standard_retraining_gd

__all__ = [
    "Adapter",
    "GroundTruth",
    "LoraMLResult",
    "Moments",
    "SRResult",
    "TaskData",
    "adapter_dim",
    "as_moments",
    "best_rank_r_fit",
    "child_generator",
    "empirical_moments",
    "finetune_adapter",
    "lora_ml",
    "lora_ml_rate",
    "make_ground_truth",
    "population_excess_error",
    "population_moments",
    "risk",
    "run_linear",
    "sample_new_task",
    "sample_task_data",
    "sr_floor",
    "sr_limit",
    "standard_retraining",
    "standard_retraining_gd",
    "task_matrices",
]
