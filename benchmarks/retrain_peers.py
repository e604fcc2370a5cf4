"""The peers metanb's retraining core is measured against, built from public APIs only.

- :func:`run_peft_loop`: LoRA-ML the PEFT way, T named adapters, ``set_adapter`` and one
  forward/backward per task, one AdamW step over the sum (a trainable base).
- :func:`run_round_robin`: the schedule of the official implementation (``jacob-block/peft-ml``,
  ``convai/lora-ml.py``): one task's batch per optimizer step, tasks in round-robin order,
  AdamW over every parameter, linear warmup (10%) then decay, no gradient clipping. Its
  adapters are metanb's (one task per forward, so each layer runs a single matmul pair, as the
  official per-task adapter does); the schedule is the only thing that differs from
  ``retrain(method="lora-ml")``. Deviation: AdamW's weight decay is 0 as in metanb's default
  (torch's default 0.01 there), so the comparison of losses isolates the schedule.
- :func:`peft_inference_twin`: a ``PeftModel`` with the same T adapters (weights copied from a
  metanb-adapted model), for PEFT's mixed-batch inference path ``adapter_names=[...]``.

Every run returns a history of cumulative clocks, as ``retrain`` does, so one throughput
function reads them all.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metanb.lora import MultiLoraConfig, add_multi_lora, multi_lora_layers
from metanb.retrain import linear_warmup_decay

Batch = dict[str, torch.Tensor]


def _clocks(began: float, cpu_began: float, **extra: Any) -> dict[str, Any]:
    return {"seconds": time.perf_counter() - began,
            "cpu_seconds": time.process_time() - cpu_began, **extra}


def peft_lora_model(model: nn.Module, num_tasks: int, rank: int,
                    target_modules: Sequence[str], fan_in_fan_out: bool = False) -> Any:
    """A deep copy of ``model`` with ``num_tasks`` PEFT LoRA adapters ``task0``, ``task1``, ..."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules),
                        fan_in_fan_out=fan_in_fan_out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes on Conv1D and on unknown model types
        peft_model = get_peft_model(copy.deepcopy(model), config, adapter_name="task0")
        for t in range(1, num_tasks):
            peft_model.add_adapter(f"task{t}", config)
    return peft_model


def run_peft_loop(model: nn.Module, tasks: Sequence[Sequence[Batch]], steps: int, rank: int,
                  target_modules: Sequence[str], device: str, fan_in_fan_out: bool = False
                  ) -> list[dict[str, Any]]:
    """LoRA-ML the PEFT way: T named adapters, ``set_adapter`` + forward/backward per task."""
    peft_model = peft_lora_model(model, len(tasks), rank, target_modules, fan_in_fan_out)
    for p in peft_model.parameters():  # LoRA-ML retrains the base too
        p.requires_grad_(True)
    peft_model.to(device).train()
    params = list(peft_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(steps, 0.1))
    per_step = sum(len(batches[0]["labels"]) for batches in tasks)
    history = []
    began, cpu_began = time.perf_counter(), time.process_time()
    for step in range(steps):
        examples = 0
        for t, batches in enumerate(tasks):
            batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
            peft_model.set_adapter(f"task{t}")
            loss = peft_model(**batch).loss * (len(batch["labels"]) / per_step)
            loss.backward()
            examples += len(batch["labels"])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # synchronise, as the metanb loop does when it logs the loss
        history.append(_clocks(began, cpu_began, examples=examples))
    return history


def run_round_robin(model: nn.Module, tasks: Sequence[Sequence[Batch]], rounds: int, rank: int,
                    target_modules: Sequence[str], lr: float, device: str
                    ) -> tuple[list[dict[str, Any]], nn.Module]:
    """The official schedule for ``rounds`` rounds (T optimizer steps each, one task per step).

    Returns one history entry per *round* (the examples and clocks of T steps, the mean of
    their T losses), so a round compares with one mixed step of ``retrain``, and the adapted
    model (adapters attached) for evaluation.
    """
    T = len(tasks)
    adapted = add_multi_lora(copy.deepcopy(model), MultiLoraConfig(
        num_tasks=T, rank=rank, alpha=2.0 * rank, target_modules=tuple(target_modules)))
    adapted.to(device).train()
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(rounds * T, 0.1))
    history = []
    began, cpu_began = time.perf_counter(), time.process_time()
    for r in range(rounds):
        examples, losses = 0, []
        for t, batches in enumerate(tasks):
            batch = {k: v.to(device) for k, v in batches[r % len(batches)].items()}
            n = len(batch["labels"])
            loss = adapted(**batch, task_ids=torch.full((n,), t, device=device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(loss.item())
            examples += n
        history.append(_clocks(began, cpu_began, examples=examples,
                               loss=sum(losses) / len(losses)))
    return history, adapted


def randomise_adapters(adapted: nn.Module, seed: int, std: float = 0.05) -> None:
    """Non-zero A and B everywhere (B starts at 0), so an output comparison tests the adapters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in multi_lora_layers(adapted).values():
            for factor in layer.factors():
                factor.copy_(torch.randn(factor.shape, generator=g) * std)


def peft_inference_twin(adapted: nn.Module, base: nn.Module, rank: int,
                        target_modules: Sequence[str], fan_in_fan_out: bool = False) -> Any:
    """A ``PeftModel`` on a copy of ``base`` carrying ``adapted``'s T adapters, in eval mode.

    ``adapted`` must be ``base`` plus metanb adapters of the same rank and alpha = 2 rank.
    """
    layers = multi_lora_layers(adapted)
    num_tasks = next(iter(layers.values())).num_tasks
    peft_model = peft_lora_model(base, num_tasks, rank, target_modules, fan_in_fan_out)
    inner = peft_model.base_model.model
    with torch.no_grad():
        for name, layer in layers.items():
            A, B = layer.factors()
            twin = inner.get_submodule(name)
            for t in range(num_tasks):
                twin.lora_A[f"task{t}"].weight.copy_(A[t])
                twin.lora_B[f"task{t}"].weight.copy_(B[t])
    return peft_model.eval()
