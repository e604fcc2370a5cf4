"""Injection: walk a model, match ``nn.Linear`` names, swap in :class:`MultiLoraLinear`.

``add_multi_lora`` and ``remove_multi_lora`` work in place on any ``torch.nn`` model, so a
Hugging Face model keeps its class, its ``save_pretrained`` and its parameter names (the base
weight of an adapted layer lives at ``<name>.base_layer.weight`` while adapters are attached,
and back at ``<name>.weight`` after removal, as in PEFT).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora.config import MultiLoraConfig
from metanb.lora.layer import MultiLoraLinear

# attributes stored on the adapted model (plain Python attributes, not in its state dict)
_CONFIG_ATTR = "multi_lora_config"
_FROZEN_ATTR = "_multi_lora_requires_grad"


def matches_target(name: str, target_modules: str | Sequence[str]) -> bool:
    """PEFT's rule: a string is a regex on the full name, else exact name or dotted suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in target_modules)


def linear_module_names(model: nn.Module) -> list[str]:
    """Names of every plain ``nn.Linear`` in ``model`` (candidates for ``target_modules``)."""
    return [n for n, m in model.named_modules() if type(m) is nn.Linear]


def find_target_modules(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """The ``nn.Linear`` names matched by ``target_modules``; an error lists what could match."""
    names = linear_module_names(model)
    found = [n for n in names if matches_target(n, target_modules)]
    if not found:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise MetanbError(
            f"no nn.Linear module matches target_modules={target_modules!r}; this model's "
            f"Linear modules are named {leaves} (e.g. {names[:3]}), {len(names)} in all"
            if names
            else f"no nn.Linear module matches target_modules={target_modules!r}: the model "
            "has no nn.Linear layers"
        )
    return found


def multi_lora_layers(model: nn.Module) -> dict[str, MultiLoraLinear]:
    """The adapted layers of ``model`` by module name (empty if none)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MultiLoraLinear)}


def get_multi_lora_config(model: nn.Module) -> MultiLoraConfig:
    """The config ``add_multi_lora`` attached to ``model``."""
    config = getattr(model, _CONFIG_ATTR, None)
    if config is None:
        raise MetanbError("this model has no multi-task adapters; call add_multi_lora first")
    return config


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter (A, B or U of every adapted layer)."""
    return [
        p for layer in multi_lora_layers(model).values()
        for n, p in layer.named_parameters(recurse=False) if n.startswith("lora_")
    ]


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted path ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def add_multi_lora(model: nn.Module, config: MultiLoraConfig) -> nn.Module:
    """Attach ``config.num_tasks`` adapters to every matching Linear of ``model``, in place.

    With ``train_base=False`` every other parameter is frozen (its previous ``requires_grad``
    is remembered and restored by :func:`remove_multi_lora`).
    """
    if multi_lora_layers(model):
        raise MetanbError("this model already has multi-task adapters; remove_multi_lora first")
    names = find_target_modules(model, config.target_modules)
    layers = {n: MultiLoraLinear(model.get_submodule(n), config, name=n) for n in names}
    setattr(model, _FROZEN_ATTR, {n: p.requires_grad for n, p in model.named_parameters()})
    if not config.train_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for name, layer in layers.items():
        replace_module(model, name, layer)
    setattr(model, _CONFIG_ATTR, config)
    return model


def remove_multi_lora(model: nn.Module) -> nn.Module:
    """Drop every adapter, in place: plain ``nn.Linear`` layers with their (trained) weights."""
    for name, layer in multi_lora_layers(model).items():
        replace_module(model, name, layer.base_layer)
    for name, p in model.named_parameters():
        p.requires_grad_(getattr(model, _FROZEN_ATTR, {}).get(name, p.requires_grad))
    for attr in (_CONFIG_ATTR, _FROZEN_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def as_task_ids(task_ids: torch.Tensor | Sequence[int], num_tasks: int) -> torch.Tensor:
    """Validate per-example task ids: a 1-D integer tensor with values in [0, num_tasks)."""
    ids = torch.as_tensor(task_ids)
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise MetanbError(
            f"task_ids must be a 1-D integer tensor (one id per example), got dtype {ids.dtype} "
            f"and shape {tuple(ids.shape)}"
        )
    if ids.numel() == 0:
        raise MetanbError("task_ids is empty; pass one id per example of the batch")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_tasks:
        raise MetanbError(
            f"task id {low if low < 0 else high} is out of range: this model has {num_tasks} "
            f"task adapters, ids must be in 0..{num_tasks - 1}"
        )
    return ids.long()


@contextmanager
def use_tasks(model: nn.Module, task_ids: torch.Tensor | Sequence[int]) -> Iterator[None]:
    """Within the block, example i of every forward uses the adapter of task ``task_ids[i]``.

    The ids are moved to the model's device once and stored on each adapted layer; the
    previous ids are restored on exit, so blocks nest. Works on a model wrapped by
    DistributedDataParallel (each process sets the ids of its own batch).
    """
    layers = list(multi_lora_layers(model).values())
    if not layers:
        raise MetanbError("use_tasks needs a model with multi-task adapters (add_multi_lora)")
    ids = as_task_ids(task_ids, layers[0].num_tasks).to(layers[0].base_layer.weight.device)
    previous = [layer.task_ids for layer in layers]
    for layer in layers:
        layer.task_ids = ids
    try:
        yield
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.task_ids = old
