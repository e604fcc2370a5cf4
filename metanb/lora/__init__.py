"""Multi-task LoRA for ``torch.nn`` models: T adapters, one forward over a mixed batch.

Laid out like PEFT's LoRA tuner: ``config`` (what to inject), ``layer`` (the adapted Linear),
``model`` (matching and injection, task ids), ``export`` (Hugging Face / PEFT formats)::

    cfg = MultiLoraConfig(num_tasks=T, rank=8, target_modules=("query", "value"))
    add_multi_lora(model, cfg)
    with use_tasks(model, task_ids):        # one id per example of the batch
        loss = model(**batch).loss          # each example goes through its own adapter
    remove_multi_lora(model)                # plain nn.Linear back, trained base kept
"""

from metanb.lora.config import MultiLoraConfig
from metanb.lora.export import (
    adapter_state_dict,
    base_only,
    export_adapter,
    export_base,
    peft_lora_config,
)
from metanb.lora.layer import MultiLoraLinear, check_rank
from metanb.lora.model import (
    adapter_parameters,
    add_multi_lora,
    find_target_modules,
    get_multi_lora_config,
    linear_module_names,
    matches_target,
    multi_lora_layers,
    remove_multi_lora,
    use_tasks,
)

__all__ = [
    "MultiLoraConfig",
    "MultiLoraLinear",
    "adapter_parameters",
    "adapter_state_dict",
    "add_multi_lora",
    "base_only",
    "check_rank",
    "export_adapter",
    "export_base",
    "find_target_modules",
    "get_multi_lora_config",
    "linear_module_names",
    "matches_target",
    "multi_lora_layers",
    "peft_lora_config",
    "remove_multi_lora",
    "use_tasks",
]
