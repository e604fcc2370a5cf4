"""Export to the formats everyone else reads: the base as a plain Hugging Face checkpoint, each
task adapter as a PEFT LoRA adapter.

The base is what LoRA-ML retraining is for, so it leaves with exactly its original parameter
names and no adapter weights: ``AutoModelFor*.from_pretrained`` loads it, and PEFT can attach a
fresh LoRA to it. A task adapter leaves in PEFT's own layout (``adapter_config.json`` +
``adapter_model.safetensors``), loadable with ``PeftModel.from_pretrained(base, path)``; a
symmetric adapter U Uᵀ is written as A = Uᵀ, B = U. :func:`export_adapters` writes all T, one
folder each. Every file is written atomically (:mod:`metanb.io`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.io import atomic_write, atomic_write_bytes, atomic_write_text
from metanb.lora.layer import fan_in_fan_out
from metanb.lora.model import get_multi_lora_config, multi_lora_layers, replace_module

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"  # PEFT's file names
ADAPTER_CONFIG_NAME = "adapter_config.json"


@contextmanager
def base_only(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` is its base (the original layers); adapters come back.

    Swapping modules is free (no copy), so exporting a large model costs no extra memory.
    """
    layers = multi_lora_layers(model)
    for name, layer in layers.items():
        replace_module(model, name, layer.base_layer)
    try:
        yield model
    finally:
        for name, layer in layers.items():
            replace_module(model, name, layer)


def export_base(model: nn.Module, path: str | Path, **save_kwargs: Any) -> Path:
    """Save the base weights of a (possibly adapted) Hugging Face model with ``save_pretrained``.

    ``save_pretrained`` writes into a temporary folder beside ``path``; each file then moves in
    atomically, so a killed export never leaves a half-written weight file.
    """
    if not hasattr(model, "save_pretrained"):
        raise MetanbError(
            f"export_base needs a Hugging Face model (with save_pretrained), got "
            f"{type(model).__name__}; save its state_dict with torch.save instead"
        )
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MetanbError(f"cannot export the base to {path}: it is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        with base_only(model):
            model.save_pretrained(tmp, **save_kwargs)
        for source in sorted(Path(tmp).rglob("*")):
            if source.is_file():
                with source.open("rb") as f:
                    atomic_write(path / source.relative_to(tmp),
                                 lambda out, f=f: shutil.copyfileobj(f, out))
    return path


def adapter_state_dict(model: nn.Module, task: int) -> dict[str, torch.Tensor]:
    """Task ``task``'s adapter keyed as PEFT saves it: ``base_model.model.<name>.lora_A.weight``."""
    config = get_multi_lora_config(model)
    if not 0 <= task < config.num_tasks:
        raise MetanbError(
            f"task {task} is out of range: the model has {config.num_tasks} task adapters, "
            f"use 0..{config.num_tasks - 1}"
        )
    state = {}
    for name, layer in multi_lora_layers(model).items():
        A, B = layer.factors()
        prefix = f"base_model.model.{name}"
        state[f"{prefix}.lora_A.weight"] = A[task].detach().to("cpu").clone().contiguous()
        state[f"{prefix}.lora_B.weight"] = B[task].detach().to("cpu").clone().contiguous()
    return state


def peft_lora_config(model: nn.Module, base_model_name_or_path: str | None = None) -> Any:
    """The ``peft.LoraConfig`` that rebuilds one task adapter of ``model`` on its base.

    ``fan_in_fan_out`` is set when the adapted layers are GPT-2 ``Conv1D`` (weight (in, out)),
    as PEFT requires to merge into them.
    """
    from peft import LoraConfig

    config = get_multi_lora_config(model)
    layers = multi_lora_layers(model)
    alpha = int(config.alpha) if float(config.alpha).is_integer() else config.alpha
    return LoraConfig(
        r=config.rank,
        lora_alpha=alpha,
        lora_dropout=config.dropout,
        # the exact adapted modules, so PEFT matches the same layers whatever the patterns were
        target_modules=sorted(layers),
        fan_in_fan_out=fan_in_fan_out(layer.base_layer for layer in layers.values()),
        bias="none",
        base_model_name_or_path=base_model_name_or_path or getattr(model, "name_or_path", None),
    )


def export_adapter(
    model: nn.Module, task: int, path: str | Path, base_model_name_or_path: str | None = None
) -> Path:
    """Write task ``task``'s adapter in PEFT's format into directory ``path``.

    ``PeftModel.from_pretrained(base, path)`` on the exported base (:func:`export_base`) then
    computes what ``model`` computes under ``use_tasks(model, [task] * batch)``.
    """
    from safetensors.torch import save

    path = Path(path)
    state = adapter_state_dict(model, task)
    config = peft_lora_config(model, base_model_name_or_path).to_dict()
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    atomic_write_text(path / ADAPTER_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    atomic_write_bytes(path / ADAPTER_WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    return path


def export_adapters(
    model: nn.Module, path: str | Path, base_model_name_or_path: str | None = None
) -> list[Path]:
    """Write every task's adapter in PEFT's format, task t into ``path/task_{t}/``."""
    path = Path(path)
    num_tasks = get_multi_lora_config(model).num_tasks
    return [export_adapter(model, t, path / f"task_{t}", base_model_name_or_path)
            for t in range(num_tasks)]
