"""Mixed batch vs round-robin: the loss each schedule reaches after the same number of examples.

On the keyed task family (:mod:`keyed_tasks`: learnable, part shared and part per task), from
one initial model: ``retrain(method="lora-ml")`` takes R steps of one mixed batch of all T tasks,
the official schedule (:func:`retrain_peers.run_round_robin`) takes R rounds of T single-task
steps, so both see the same R·T batches, in the same order of data, with the same peak lr and
the same linear warmup (10%) and decay over their own step count; neither clips gradients.
Each schedule runs at the given lr and at lr / T.
Every training batch is fresh (never repeated), so each step's training loss is also an
honest estimate of the current model's loss on new data: the curves are compared at equal
examples (mean over each quarter of the run), and at the end on held-out batches, each task
through its own adapter, in eval mode.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from keyed_tasks import keyed_task_set
from retrain_cases import VOCAB, Sizes
from retrain_peers import run_round_robin
from torch import nn

from metanb.lora import add_multi_lora, use_tasks
from metanb.models import tiny_roberta
from metanb.retrain import retrain

Batch = dict[str, torch.Tensor]


def heldout_loss(adapted: nn.Module, heldout: list[list[Batch]]) -> float:
    """Mean loss over held-out batches, task t through adapter t, eval mode, no gradients."""
    adapted.eval()
    losses = []
    with torch.no_grad():
        for t, batches in enumerate(heldout):
            for batch in batches:
                with use_tasks(adapted, [t] * len(batch["labels"])):
                    losses.append(adapted(**batch).loss.item())
    return statistics.fmean(losses)


def quarters(losses: list[float]) -> list[float]:
    """Mean loss over each quarter of a run (the last quarter: where each schedule ended up)."""
    n = len(losses)
    return [round(statistics.fmean(losses[i * n // 4:(i + 1) * n // 4]), 3) for i in range(4)]


def mixed_run(model: nn.Module, train: list[list[Batch]], rounds: int, rank: int,
              targets: tuple[str, ...], lr: float) -> tuple[list[float], nn.Module]:
    """``retrain(method="lora-ml")``: its per-step losses, and the model with adapters back."""
    res = retrain(model, train, method="lora-ml", rank=rank, steps=rounds, lr=lr,
                  target_modules=targets, tasks_per_step=len(train), progress=False,
                  device="cpu", max_grad_norm=None)
    adapted = add_multi_lora(res.model, res.lora_config)
    problems = adapted.load_state_dict(res.adapter_state, strict=False)
    if problems.unexpected_keys:
        raise RuntimeError(f"adapter keys do not fit: {problems.unexpected_keys[:3]}")
    return [h["loss"] for h in res.history], adapted


def compare_schedules(sizes: Sizes, T: int, rounds: int, lr: float) -> list[dict[str, Any]]:
    """Both schedules, each at ``lr`` and ``lr / T``, for ``rounds`` rounds of T task batches.

    lr / T because round-robin takes T times the steps, each on 1/T of the examples: the same
    peak lr is a T times larger total step, and a single-task batch is noisier.
    """
    model = tiny_roberta(VOCAB, seed=0, hidden_size=sizes.hidden,
                         num_hidden_layers=sizes.layers, num_attention_heads=4,
                         intermediate_size=4 * sizes.hidden)
    shape = dict(batch_size=sizes.per_task, choices=sizes.choices, length=sizes.length)
    train = keyed_task_set(T, VOCAB, rounds, seed=0, **shape)
    heldout = keyed_task_set(T, VOCAB, 4, seed=1, **shape)
    targets = ("query", "value")
    rows = []
    for rate in (lr, lr / T):
        for schedule in ("mixed", "round-robin"):
            if schedule == "mixed":
                losses, adapted = mixed_run(model, train, rounds, sizes.rank, targets, rate)
            else:
                history, adapted = run_round_robin(model, train, rounds, sizes.rank, targets,
                                                   rate, "cpu")
                losses = [h["loss"] for h in history]
            rows.append({
                "schedule": schedule, "T": T, "lr": f"{rate:.2g}",
                "examples": rounds * T * sizes.per_task,
                "optimizer steps": rounds if schedule == "mixed" else rounds * T,
                "chance": round(math.log(sizes.choices), 3),
                **{f"loss q{i + 1}": v for i, v in enumerate(quarters(losses))},
                "held-out loss": round(heldout_loss(adapted, heldout), 4)})
    return rows
