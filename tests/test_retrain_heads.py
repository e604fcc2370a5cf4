"""Per-task heads (the paper's LoRA-ML and last-layer-ML): trained per task, then discarded."""

from __future__ import annotations

import pytest
import torch

from metanb import MetanbError
from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.retrain import retrain
from metanb.retrain.heads import TaskHeads, add_task_heads

VOCAB = 40
FAST = dict(lr=1e-2, progress=False, device="cpu")


@pytest.fixture
def model():
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def conflicting_tasks(T: int = 3):
    """The same inputs in every task, the answer shifted by the task id: only per-task
    parameters can fit all of them."""
    shared = random_multiple_choice_batches(VOCAB, 2, batch_size=8, choices=2, length=8)
    return [[{**b, "labels": (b["labels"] + t) % 2} for b in shared] for t in range(T)]


def test_last_layer_ml_trains_one_head_per_task_and_returns_the_original_head(model):
    original = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    res = retrain(model, conflicting_tasks(3), method="last-layer-ml", task_heads="classifier",
                  steps=25, **FAST)
    losses = [h["loss"] for h in res.history]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert isinstance(res.model.classifier, torch.nn.Linear)  # a plain model again
    for key, value in res.model.classifier.state_dict().items():
        assert torch.equal(value, original[key])  # the retraining heads are discarded
    assert sorted(res.head_state) == sorted(
        f"classifier.heads.{t}.{k}" for t in range(3) for k in ("weight", "bias"))
    w = [res.head_state[f"classifier.heads.{t}.weight"] for t in range(3)]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_a_head_of_a_task_absent_from_every_step_is_untouched(model):
    res = retrain(model, conflicting_tasks(4), method="last-layer-ml", task_heads="classifier",
                  steps=2, tasks_per_step=1, seed=1, **FAST)
    drawn = {t for h in res.history for t in h["tasks"]}
    for t in set(range(4)) - drawn:
        assert torch.equal(res.head_state[f"classifier.heads.{t}.weight"],
                           model.classifier.weight)


def test_lora_ml_with_task_heads(model):
    res = retrain(model, conflicting_tasks(3), method="lora-ml", rank=2,
                  task_heads="classifier", steps=3, **FAST)
    assert res.head_state is not None and res.adapter_state is not None


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="last-layer-ml"), "method 'last-layer-ml' needs task_heads"),
    (dict(method="last-layer-ml", task_heads="clasifier"), "no module 'clasifier'"),
])
def test_heads_mismatches_are_one_line(model, kwargs, message):
    with pytest.raises(MetanbError, match=message):
        retrain(model, conflicting_tasks(2), steps=1, **FAST, **kwargs)


def test_methods_with_one_shared_head_ignore_task_heads(model):
    res = retrain(model, conflicting_tasks(2), method="standard", task_heads="classifier",
                  steps=1, **FAST)
    assert res.head_state is None


def test_a_head_without_task_ids_says_how_to_route(model):
    heads = add_task_heads(model, "classifier", 2)
    assert isinstance(heads, TaskHeads)
    batch = conflicting_tasks(1)[0][0]
    with pytest.raises(MetanbError, match="no task ids"):
        model(**batch)
