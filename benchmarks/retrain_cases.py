"""What the retraining benchmarks run: the models (cases), their task sets, the ways to train.

Three cases, all random models (no download):

- ``roberta-mc``: a tiny ``RobertaForMultipleChoice``, adapters on ``query``/``value``, as in
  the book;
- ``causal-lm``: a tiny GPT-2 LM, adapters on its fused ``c_attn`` (a ``Conv1D``), or a Llama LM
  (``q_proj``/``v_proj``, plain ``nn.Linear``) when ``add_multi_lora`` refuses ``Conv1D``;
- ``roberta-base-width``: ``RobertaForMultipleChoice`` with roberta-base's layer sizes (hidden
  768, intermediate 3072, 12 heads) but 2 layers, sequences of 64, adapters on
  ``query``/``value``: the realistic ratio of adapter to base work, which the width-64 cases
  (where a rank-8 adapter is 1/8 of its layer's width) overstate. Fixed sizes whatever
  ``--quick`` says, at most :data:`WIDE_STEPS` steps a run, no memory rows (seconds a step).

Four ways to take one retraining *step* (T task batches, one per task; throughput counts
examples, so the step size does not matter):

- ``standard``: SR through ``metanb.retrain`` (the pooled batch, no adapters);
- ``lora-ml mixed``: LoRA-ML through ``metanb.retrain`` (one forward/backward over the mixed
  batch of all T tasks, one optimizer step);
- ``peft loop``: PEFT adapters, T forwards/backwards with ``set_adapter``, one optimizer step;
- ``round-robin``: the official implementation's schedule, T optimizer steps of one task each.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from retrain_peers import run_peft_loop, run_round_robin
from torch import nn

from metanb.errors import MetanbError
from metanb.lora import MultiLoraConfig, add_multi_lora
from metanb.models import (
    causal_lm_labels,
    random_multiple_choice_batches,
    tiny_causal_lm,
    tiny_roberta,
)
from metanb.retrain import retrain

VOCAB = 1000
WAYS = ("standard", "lora-ml mixed", "peft loop", "round-robin")
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Sizes:
    """Model and step sizes (picklable: memory runs rebuild the case in a subprocess)."""

    hidden: int
    layers: int
    per_task: int  # examples per task batch
    choices: int  # multiple choice: sequences per example
    length: int  # tokens per sequence
    rank: int = 8


@dataclass(frozen=True)
class Case:
    """A model to retrain and where its adapters go."""

    name: str
    model: nn.Module
    target_modules: tuple[str, ...]
    fan_in_fan_out: bool  # PEFT's flag for GPT-2's Conv1D
    make_tasks: Callable[[int], list[list[Batch]]]  # T -> one list of batches per task
    note: str = ""
    max_steps: int | None = None  # cap on the steps of one timed run (a slow case)
    memory: bool = True  # measured in the peak-memory table


def quiet_transformers() -> None:
    """Errors only: GPT-2's loss logs a config note at every model build (once per process)."""
    from transformers.utils import logging

    logging.set_verbosity_error()


def roberta_case(sizes: Sizes) -> Case:
    model = tiny_roberta(VOCAB, seed=0, hidden_size=sizes.hidden,
                         num_hidden_layers=sizes.layers, num_attention_heads=4,
                         intermediate_size=4 * sizes.hidden)

    def make_tasks(T: int) -> list[list[Batch]]:
        return [random_multiple_choice_batches(VOCAB, 2, sizes.per_task, sizes.choices,
                                               sizes.length, seed=t) for t in range(T)]

    return Case("roberta-mc", model, ("query", "value"), False, make_tasks)


WIDE = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=2)  # roberta-base's widths, 2 of its 12 layers
WIDE_SIZES = dict(per_task=1, choices=2, length=64)
WIDE_STEPS = 6


def roberta_base_width_case(sizes: Sizes) -> Case:
    model = tiny_roberta(VOCAB, seed=0, **WIDE)

    def make_tasks(T: int) -> list[list[Batch]]:
        return [random_multiple_choice_batches(VOCAB, 2, WIDE_SIZES["per_task"],
                                               WIDE_SIZES["choices"], WIDE_SIZES["length"],
                                               seed=t) for t in range(T)]

    note = (f"roberta-base widths ({WIDE}), sequences of {WIDE_SIZES['length']}, "
            f"{WIDE_SIZES['choices']} choices, {WIDE_SIZES['per_task']} example per task batch")
    return Case("roberta-base-width", model, ("query", "value"), False, make_tasks, note,
                max_steps=WIDE_STEPS, memory=False)


def lm_batches(batches: int, batch_size: int, length: int, seed: int) -> list[Batch]:
    """Random token sequences with next-token labels (nothing to learn: it measures code)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
        mask = torch.ones_like(ids)
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": causal_lm_labels(ids, mask)})
    return out


def adaptable(model: nn.Module, target_modules: tuple[str, ...]) -> str | None:
    """None if ``add_multi_lora`` accepts these targets, else its one-line refusal."""
    try:
        add_multi_lora(copy.deepcopy(model), MultiLoraConfig(num_tasks=1, rank=1,
                                                             target_modules=target_modules))
    except MetanbError as error:
        return str(error)
    return None


def flop_bound(case: Case, rank: int) -> float:
    """The best mixed / standard ratio the adapters' arithmetic allows: the multiply-adds per
    token of every adaptable layer, over the same plus the adapters' r·(in + out) on the
    target layers. An estimate good to about a percent: attention products and element-wise
    work are left out, and a pooler or head is counted as if it ran on every token. An
    implementation cannot beat it by more than that; the gap below it is overhead."""
    from metanb.lora import multi_lora_layers
    from metanb.lora.layer import features, is_adaptable

    adapted = add_multi_lora(copy.deepcopy(case.model), MultiLoraConfig(
        num_tasks=1, rank=rank, target_modules=case.target_modules))
    targets = multi_lora_layers(adapted)
    base = sum(i * o for m in adapted.modules() if is_adaptable(m) for i, o in [features(m)])
    extra = sum(rank * (layer.in_features + layer.out_features) for layer in targets.values())
    return round(base / (base + extra), 3)


def causal_lm_case(sizes: Sizes) -> Case:
    """GPT-2 (Conv1D) if metanb adapts it, else Llama; ``note`` says which and why."""
    length = 2 * sizes.length  # one sequence per example: twice as long, to weigh the same
    gpt2 = tiny_causal_lm("gpt2", VOCAB, seed=0, n_embd=sizes.hidden, n_layer=sizes.layers,
                          n_head=4, n_inner=4 * sizes.hidden, n_positions=max(128, length))
    refusal = adaptable(gpt2, ("c_attn",))
    if refusal is None:
        model, targets, fan, note = gpt2, ("c_attn",), True, "gpt2 (Conv1D c_attn)"
    else:
        model = tiny_causal_lm("llama", VOCAB, seed=0, hidden_size=sizes.hidden,
                               num_hidden_layers=sizes.layers, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=4 * sizes.hidden,
                               max_position_embeddings=max(128, length))
        targets, fan = ("q_proj", "v_proj"), False
        note = f"llama (q_proj, v_proj): add_multi_lora refused GPT-2's Conv1D: {refusal}"

    def make_tasks(T: int) -> list[list[Batch]]:
        return [lm_batches(2, sizes.per_task, length, seed=t) for t in range(T)]

    return Case("causal-lm", model, targets, fan, make_tasks, note)


CASES: dict[str, Callable[[Sizes], Case]] = {"roberta-mc": roberta_case,
                                             "causal-lm": causal_lm_case,
                                             "roberta-base-width": roberta_base_width_case}


def run_way(way: str, case: Case, tasks: list[list[Batch]], steps: int, rank: int,
            device: str) -> list[dict[str, Any]]:
    """Take ``steps`` steps of ``way``; the history of cumulative clocks, one entry a step."""
    if way in ("standard", "lora-ml mixed"):
        method = "standard" if way == "standard" else "lora-ml"
        res = retrain(case.model, tasks, method=method, rank=rank, steps=steps, lr=1e-4,
                      target_modules=case.target_modules, tasks_per_step=len(tasks),
                      progress=False, device=device, max_grad_norm=1.0)
        return res.history
    if way == "peft loop":
        return run_peft_loop(case.model, tasks, steps, rank, case.target_modules, device,
                             case.fan_in_fan_out)
    if way == "round-robin":
        return run_round_robin(case.model, tasks, steps, rank, case.target_modules, 1e-4,
                               device)[0]
    raise ValueError(f"unknown way {way!r}; use one of {WAYS}")
