"""Multi-task LoRA for ``torch.nn`` models: T adapters, one forward over a mixed batch.

Laid out like PEFT's LoRA tuner: ``config`` (what to inject), ``layer`` (the adapted layer:
``nn.Linear``, its subclasses, GPT-2's ``Conv1D``), ``routing`` (how task ids reach the layers,
the mixed forward), ``model`` (matching and injection), ``export`` (Hugging Face / PEFT)::

    cfg = MultiLoraConfig(num_tasks=T, rank=8, target_modules=("query", "value"))
    add_multi_lora(model, cfg)
    loss = model(**batch, task_ids=ids).loss   # one id per example: its own adapter
    loss.backward()                            # also under gradient checkpointing
    with use_tasks(model, ids):                # the same, for calls that take no task_ids
        loss = model(**batch).loss
    export_adapters(model, "adapters")         # adapters/task_{t}/, PEFT format
    remove_multi_lora(model)                   # the original layers back, trained base kept
"""

from metanb.lora.config import MultiLoraConfig
from metanb.lora.export import (
    adapter_state_dict,
    base_only,
    export_adapter,
    export_adapters,
    export_base,
    peft_lora_config,
)
from metanb.lora.layer import MultiLoraLinear, check_rank, fan_in_fan_out, is_adaptable
from metanb.lora.model import (
    TASK_IDS_KWARG,
    adapted_root,
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
from metanb.lora.routing import TaskRouting, as_task_ids, mixed_update

__all__ = [
    "TASK_IDS_KWARG",
    "MultiLoraConfig",
    "MultiLoraLinear",
    "TaskRouting",
    "adapted_root",
    "adapter_parameters",
    "adapter_state_dict",
    "add_multi_lora",
    "as_task_ids",
    "base_only",
    "check_rank",
    "export_adapter",
    "export_adapters",
    "export_base",
    "fan_in_fan_out",
    "find_target_modules",
    "get_multi_lora_config",
    "is_adaptable",
    "linear_module_names",
    "matches_target",
    "mixed_update",
    "multi_lora_layers",
    "peft_lora_config",
    "remove_multi_lora",
    "use_tasks",
]
