"""Injection: walk a model, match layer names, swap in :class:`MultiLoraLinear`; route task ids.

``add_multi_lora`` and ``remove_multi_lora`` work in place on any ``torch.nn`` model, so a
Hugging Face model keeps its class, its ``save_pretrained`` and its parameter names (the base
weight of an adapted layer lives at ``<name>.base_layer.weight`` while adapters are attached,
and back at ``<name>.weight`` after removal, as in PEFT). Candidates are ``nn.Linear`` and its
subclasses and GPT-2's ``Conv1D`` (:func:`metanb.lora.layer.is_adaptable`).

Task ids reach the layers through one forward pre-hook on the adapted model (the *root*): see
:mod:`metanb.lora.routing` for the design and its one limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora.config import MultiLoraConfig
from metanb.lora.layer import MultiLoraLinear, is_adaptable
from metanb.lora.routing import TaskRouting

# attributes stored on the adapted model (plain Python attributes, not in its state dict);
# deepcopy maps them to the copy's own layers, so a copied model routes its own ids
_CONFIG_ATTR = "multi_lora_config"
_FROZEN_ATTR = "_multi_lora_requires_grad"
_LAYERS_ATTR = "_multi_lora_layers"  # the adapted layers, in order, for the root hook
_SCOPE_ATTR = "_multi_lora_scope"  # the TaskRouting of the innermost use_tasks block, or None
TASK_IDS_KWARG = "task_ids"  # model(**batch, task_ids=ids)
BATCH_KEYS = ("input_ids", "inputs_embeds", "pixel_values")  # where a batch's size is read


def matches_target(name: str, target_modules: str | Sequence[str]) -> bool:
    """PEFT's rule: a string is a regex on the full name, else exact name or dotted suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in target_modules)


def linear_module_names(model: nn.Module) -> list[str]:
    """Names of every layer of ``model`` an adapter can wrap (candidates for ``target_modules``)."""
    return [n for n, m in model.named_modules() if n and is_adaptable(m)]


def find_target_modules(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """The adaptable layer names matched by ``target_modules``; an error lists what could match."""
    names = linear_module_names(model)
    found = [n for n in names if matches_target(n, target_modules)]
    if not found:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise MetanbError(
            f"no nn.Linear module matches target_modules={target_modules!r}; this model's "
            f"candidates (nn.Linear and subclasses, GPT-2 Conv1D) are named {leaves} "
            f"(e.g. {names[:3]}), {len(names)} in all"
            if names
            else f"no nn.Linear module matches target_modules={target_modules!r}: the model "
            "has no nn.Linear or Conv1D layers"
        )
    return found


def multi_lora_layers(model: nn.Module) -> dict[str, MultiLoraLinear]:
    """The adapted layers of ``model`` by module name (empty if none)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MultiLoraLinear)}


def adapted_root(model: nn.Module) -> nn.Module | None:
    """The module ``add_multi_lora`` adapted: ``model`` itself or the one it wraps (DDP)."""
    return next((m for m in model.modules() if hasattr(m, _CONFIG_ATTR)), None)


def get_multi_lora_config(model: nn.Module) -> MultiLoraConfig:
    """The config ``add_multi_lora`` attached to ``model``."""
    root = adapted_root(model)
    if root is None:
        raise MetanbError("this model has no multi-task adapters; call add_multi_lora first")
    return getattr(root, _CONFIG_ATTR)


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


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The leading size of the call's main input, where one can be found."""
    for key in BATCH_KEYS:
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key].shape[0]
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def _set_routing(layers: Sequence[MultiLoraLinear], routing: TaskRouting | None) -> None:
    for layer in layers:
        layer.routing = routing


def _route_task_ids(root: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Root forward pre-hook: give every adapted layer this forward's ids (or none at all).

    A module-level function that reads everything off ``root``, so a deep copy of the model
    routes to its own layers.
    """
    layers: list[MultiLoraLinear] = getattr(root, _LAYERS_ATTR, [])
    routing = getattr(root, _SCOPE_ATTR, None)
    if TASK_IDS_KWARG in kwargs:
        ids = kwargs.pop(TASK_IDS_KWARG)
        if ids is not None and layers:
            routing = TaskRouting.build(ids, layers[0].num_tasks, layers[0].weight.device)
    if routing is not None:
        n = _batch_size(args, kwargs)
        if n is not None and n != routing.size:
            raise MetanbError(
                f"the batch has {n} examples (leading dimension of its inputs) but "
                f"{routing.size} task ids; pass one id per example, batch-first"
            )
    _set_routing(layers, routing)
    return args, kwargs


def _is_route_hook(hook: object) -> bool:
    return hook is _route_task_ids


def add_multi_lora(model: nn.Module, config: MultiLoraConfig) -> nn.Module:
    """Attach ``config.num_tasks`` adapters to every matching layer of ``model``, in place.

    With ``train_base=False`` every other parameter is frozen (its previous ``requires_grad``
    is remembered and restored by :func:`remove_multi_lora`). The model then accepts a
    ``task_ids=`` keyword in its forward (one id per example).
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
    setattr(model, _LAYERS_ATTR, list(layers.values()))
    setattr(model, _SCOPE_ATTR, None)
    model.register_forward_pre_hook(_route_task_ids, with_kwargs=True)
    return model


def remove_multi_lora(model: nn.Module) -> nn.Module:
    """Drop every adapter, in place: the original layers with their (trained) weights."""
    for name, layer in multi_lora_layers(model).items():
        replace_module(model, name, layer.base_layer)
    for name, p in model.named_parameters():
        p.requires_grad_(getattr(model, _FROZEN_ATTR, {}).get(name, p.requires_grad))
    # the hook is found by identity: a handle object would not survive a deep copy of the model
    for key in [k for k, hook in model._forward_pre_hooks.items() if _is_route_hook(hook)]:
        del model._forward_pre_hooks[key]
        model._forward_pre_hooks_with_kwargs.pop(key, None)
    for attr in (_CONFIG_ATTR, _FROZEN_ATTR, _LAYERS_ATTR, _SCOPE_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextmanager
def use_tasks(model: nn.Module, task_ids: torch.Tensor | Sequence[int]) -> Iterator[None]:
    """Within the block, example i of every forward uses the adapter of task ``task_ids[i]``.

    The ids are validated and moved to the model's device once. On exit the enclosing block's
    ids come back for the *next* forward (blocks nest), while the layers keep this block's ids
    until then, so a ``loss.backward()`` after the block (gradient checkpointing re-runs
    forwards there) still sees them. Works on a model wrapped by DistributedDataParallel. A
    ``task_ids=`` keyword of a call inside the block wins over the block's ids.
    """
    root = adapted_root(model)
    # the root keeps its layers: walking every module of a big model each step costs ~1 ms
    whole = root is not None and (root is model or root is getattr(model, "module", None))
    layers = getattr(root, _LAYERS_ATTR, None) if whole else None  # (the latter: DDP's wrap)
    if not layers:
        layers = list(multi_lora_layers(model).values())
    if not layers:
        raise MetanbError("use_tasks needs a model with multi-task adapters (add_multi_lora)")
    routing = TaskRouting.build(task_ids, layers[0].num_tasks, layers[0].weight.device)
    previous = getattr(root, _SCOPE_ATTR, None) if root is not None else None
    if root is not None:
        setattr(root, _SCOPE_ATTR, routing)
    _set_routing(layers, routing)  # also for calls that bypass the root (a submodule)
    try:
        yield
    finally:
        if root is not None:
            setattr(root, _SCOPE_ATTR, previous)
