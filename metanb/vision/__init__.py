"""The paper's vision experiment: an MLP-Mixer retrained on class-pair tasks of real images.

:mod:`~metanb.vision.mixer` is the model, :mod:`~metanb.vision.tasks` the tasks and their
batches, :mod:`metanb.data.images` the images (CIFAR-10's binary archive, scikit-learn's
digits offline).
"""

from metanb.vision.mixer import ALL_LINEAR, DIGITS_MIXER, HEAD, MixerConfig, MixerOutput, MLPMixer
from metanb.vision.tasks import (
    DATASETS,
    RETRAIN_PAIRS,
    UNSEEN_PAIR,
    Augment,
    TaskBatches,
    VisionDataset,
    VisionTasks,
    eval_batches,
    get_dataset,
    make_tasks,
    pair_task,
)

__all__ = [
    "ALL_LINEAR",
    "DATASETS",
    "DIGITS_MIXER",
    "HEAD",
    "RETRAIN_PAIRS",
    "UNSEEN_PAIR",
    "Augment",
    "MLPMixer",
    "MixerConfig",
    "MixerOutput",
    "TaskBatches",
    "VisionDataset",
    "VisionTasks",
    "eval_batches",
    "get_dataset",
    "make_tasks",
    "pair_task",
]
