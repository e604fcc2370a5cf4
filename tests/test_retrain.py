"""metanb.retrain: one loop, three methods, mixed batches, clear errors."""

from __future__ import annotations

import pytest
import torch

from metanb import MetanbError
from metanb.finetune import evaluate_loss
from metanb.lora import multi_lora_layers
from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.retrain import METHODS, mix_batches, retrain, step_tasks

VOCAB = 40
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
FAST = dict(rank=2, lr=1e-2, progress=False, device="cpu")


@pytest.fixture
def model():
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1, **NO_DROPOUT)


def random_tasks(T: int, batches: int = 2, batch_size: int = 4, length: int = 6):
    return [random_multiple_choice_batches(VOCAB, batches, batch_size, 2, length, seed=t)
            for t in range(T)]


def conflicting_tasks(T: int = 2):
    """The same inputs in every task, with the answer shifted by the task id: no single model
    fits all tasks (its accuracy averages to chance), a per-task adapter can."""
    shared = random_multiple_choice_batches(VOCAB, 2, batch_size=8, choices=2, length=8)
    return [[{**b, "labels": (b["labels"] + t) % 2} for b in shared] for t in range(T)]


def test_unknown_method_lists_the_valid_ones(model):
    with pytest.raises(MetanbError, match="unknown method 'maml'.*lora-ml, reptile, standard"):
        retrain(model, random_tasks(2), method="maml", **FAST)
    assert {"standard", "lora-ml", "reptile"} <= set(METHODS)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "rank must be at least 1"),
    (dict(rank=33), "rank 33 does not fit layer .*1 <= rank <= 32"),
    (dict(target_modules=("q_proj", "v_proj")), "no nn.Linear module matches.*'query'"),
    (dict(steps=0), "steps must be >= 1, got 0"),
    (dict(mixed_precision="fp64"), "unknown mixed_precision .fp64.; choose from no, fp16, bf16"),
    (dict(learning_rate=1e-3), "unknown retraining options \\['learning_rate'\\]"),
])
def test_bad_arguments_are_clear_errors(model, kwargs, message):
    with pytest.raises(MetanbError, match=message):
        retrain(model, random_tasks(2), **{"method": "lora-ml", **FAST, **kwargs})


@pytest.mark.parametrize("method", ["standard", "lora-ml", "reptile"])
def test_every_method_reduces_the_training_loss_and_returns_a_plain_base(model, method):
    tasks = random_tasks(3)
    names = list(model.state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    res = retrain(model, tasks, method=method, steps=25, inner_steps=2, **FAST)
    pooled = [b for task in tasks for b in task]
    assert evaluate_loss(res.model, pooled) < 0.7 * evaluate_loss(model, pooled)
    assert type(res.model) is type(model) and list(res.model.state_dict()) == names
    assert not multi_lora_layers(res.model)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert [h["step"] for h in res.history] == list(range(1, 26))
    assert all({"loss", "lr", "tasks", "examples"} <= set(h) for h in res.history)
    assert res.history[0]["examples"] == (3 * 4 if method != "reptile" else 3 * 2 * 4)


def test_lora_ml_base_plus_adapter_t_fits_task_t_better_than_the_base(model):
    tasks = conflicting_tasks(2)
    res = retrain(model, tasks, method="lora-ml", steps=60, **FAST)
    adapted = res.with_adapters()
    base_losses = [evaluate_loss(res.model, batches) for batches in tasks]
    adapter_losses = [evaluate_loss(adapted, batches, task=t) for t, batches in enumerate(tasks)]
    assert max(adapter_losses) < 0.1
    assert sum(base_losses) / 2 > 0.69  # any single model averages >= ln 2 over the two tasks
    assert all(a < b for a, b in zip(adapter_losses, base_losses, strict=True))


def test_only_methods_with_task_adapters_give_them_back(model):
    res = retrain(model, random_tasks(2), method="standard", steps=1, **FAST)
    assert res.lora_config is None and res.adapter_state is None
    with pytest.raises(MetanbError, match="trains no task adapters"):
        res.with_adapters()


def test_grad_accum_equals_one_step_on_the_concatenated_batches(model):
    # a multiple-choice head's bias shifts every choice alike: its exact gradient is 0, and
    # Adam would turn the float noise into ±lr steps that differ between the two runs
    model.classifier.bias.requires_grad_(False)
    small = random_tasks(2, batches=2, batch_size=3)
    joined = [[{k: torch.cat([b[k] for b in task]) for k in task[0]}] for task in small]
    kw = dict(method="lora-ml", steps=3, max_grad_norm=None, **FAST)
    accumulated = retrain(model, small, grad_accum=2, **kw)
    single = retrain(model, joined, grad_accum=1, **kw)
    for a, b in zip(accumulated.model.parameters(), single.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_reptile_with_one_task_one_inner_step_and_full_meta_step_is_plain_training(model):
    tasks = random_tasks(1)
    kw = dict(steps=4, **FAST)
    reptile = retrain(model, tasks, method="reptile", inner_steps=1, meta_step=1.0, **kw)
    standard = retrain(model, tasks, method="standard", **kw)
    assert [h["loss"] for h in reptile.history] == [h["loss"] for h in standard.history]
    for a, b in zip(reptile.model.parameters(), standard.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_mix_batches_concatenates_and_labels_each_example_with_its_task():
    a, b = random_tasks(2, batches=1, batch_size=3)
    b[0] = {k: v[:2] for k, v in b[0].items()}
    mixed, ids = mix_batches([a[0], b[0]], [4, 1])
    assert ids.tolist() == [4, 4, 4, 1, 1]
    assert torch.equal(mixed["input_ids"][3:], b[0]["input_ids"])
    assert mixed["input_ids"].shape == (5, 2, 6)


def test_mixing_batches_of_different_shapes_is_a_clear_error(model):
    tasks = random_tasks(2)
    tasks[1] = random_multiple_choice_batches(VOCAB, 2, 4, 2, length=9)
    with pytest.raises(MetanbError, match="field 'input_ids' has different shapes.*pad"):
        retrain(model, tasks, method="standard", steps=1, **FAST)
    with pytest.raises(MetanbError, match="different shapes"):
        mix_batches([tasks[0][0], {**tasks[0][0], "labels": torch.zeros(4, 2)}], [0, 1])


def test_tasks_per_step_defaults_to_all_capped_and_is_a_seeded_draw(model):
    res = retrain(model, random_tasks(10, batches=1, batch_size=1), method="lora-ml", steps=6,
                  **FAST)
    drawn = [h["tasks"] for h in res.history]
    assert all(len(ids) == 8 and len(set(ids)) == 8 for ids in drawn)
    assert len({tuple(ids) for ids in drawn}) > 1
    assert drawn == [step_tasks(res.config, 10, s) for s in range(6)]
    few = retrain(model, random_tasks(3), method="standard", steps=2, tasks_per_step=2, **FAST)
    assert all(len(h["tasks"]) == 2 for h in few.history)


def test_a_one_shot_generator_is_refused_when_it_runs_out(model):
    batches = random_tasks(1)[0]
    with pytest.raises(MetanbError, match="re-iterable"):
        retrain(model, [(b for b in batches)], method="standard", steps=3, **FAST)


def test_bf16_mixed_precision_runs_and_returns_an_unwrapped_model(model):
    res = retrain(model, random_tasks(2), method="lora-ml", steps=3, mixed_precision="bf16",
                  **FAST)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    assert "forward" not in vars(res.model)  # accelerate's autocast wrapper is removed
    assert next(res.model.parameters()).dtype == torch.float32
