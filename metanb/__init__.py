"""metanb: meta-learning adaptable foundation models with LoRA.

The companion package of the metanb textbook. Subpackages, by concept:

- ``metanb.linear``: the linear theory (ground truth, SR, LoRA-ML, fine-tuning, closed forms)
- ``metanb.lora``: multi-task LoRA for any ``torch.nn`` model with ``nn.Linear`` layers
- ``metanb.retrain`` / ``metanb.finetune``: one retraining loop (a method registry), test-time
  adaptation
- ``metanb.io``: atomic writes and pickle-free loads for every file the package touches
- ``metanb.data``: ConvAI2 / Persona-Chat tasks and an offline generator
- ``metanb.experiments``: configs, profiles, the resumable grid runner
- ``metanb.plots``: the figures the chapters draw
"""

from metanb.errors import MetanbError

__version__ = "0.1.0"
__all__ = ["MetanbError", "__version__"]
