"""One retraining loop for every method: SR, LoRA-ML, Reptile, and whatever registers next.

By concept: :mod:`~metanb.retrain.config` (what a run is), :mod:`~metanb.retrain.methods` (the
registry), :mod:`~metanb.retrain.streams` (task batches and the mixed batch of a step),
:mod:`~metanb.retrain.optim` (AdamW that leaves absent tasks alone),
:mod:`~metanb.retrain.precision`, :mod:`~metanb.retrain.checkpoint` and
:mod:`~metanb.retrain.loop`::

    res = retrain(model, tasks, method="lora-ml", rank=8, steps=1000, lr=1e-4,
                  target_modules=("query", "value"), seed=0)
    res.model.save_pretrained("retrained-base")   # a plain Hugging Face model, no adapters
"""

from metanb.retrain.checkpoint import CHECKPOINT_FORMAT, Checkpoint
from metanb.retrain.config import (
    DEVICES,
    MAX_DEFAULT_TASKS_PER_STEP,
    MIXED_PRECISION,
    RetrainConfig,
    RetrainSettings,
    settings_from,
)
from metanb.retrain.loop import (
    RetrainResult,
    StepContext,
    linear_warmup_decay,
    resolve_device,
    retrain,
    run_retraining,
)
from metanb.retrain.methods import (
    METHODS,
    RetrainMethod,
    get_method,
    joint_step,
    method_names,
    register_method,
    reptile_step,
    unregister_method,
)
from metanb.retrain.optim import TaskAdamW
from metanb.retrain.streams import TaskStream, TaskStreams, mix_batches, step_tasks

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEVICES",
    "MAX_DEFAULT_TASKS_PER_STEP",
    "METHODS",
    "MIXED_PRECISION",
    "Checkpoint",
    "RetrainConfig",
    "RetrainMethod",
    "RetrainResult",
    "RetrainSettings",
    "StepContext",
    "TaskAdamW",
    "TaskStream",
    "TaskStreams",
    "get_method",
    "joint_step",
    "linear_warmup_decay",
    "method_names",
    "mix_batches",
    "register_method",
    "reptile_step",
    "resolve_device",
    "retrain",
    "run_retraining",
    "settings_from",
    "step_tasks",
    "unregister_method",
]
