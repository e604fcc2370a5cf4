"""Opt-in settings that reproduce the official convai/ loops (jacob-block/peft-ml): tasks taken
in turn, fresh per-task heads, a stretched lr schedule, Reptile's outer AdamW. The defaults
(random tasks, copied heads, decay to 0, interpolation) are left as they were."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from metanb import MetanbError
from metanb.experiments.profiles import load_profile
from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.retrain import RetrainConfig, linear_warmup_decay, retrain, step_tasks
from metanb.retrain.heads import add_task_heads
from metanb.retrain.streams import schedule_length, turn_order

VOCAB = 40
FAST = dict(rank=2, lr=1e-2, progress=False, device="cpu")


@pytest.fixture
def model():
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def sized_tasks(sizes):
    return [random_multiple_choice_batches(VOCAB, n, 4, 2, 6, seed=t)
            for t, n in enumerate(sizes)]


# ---- (a) tasks in turn ------------------------------------------------------------------------

def test_turn_order_is_the_official_loops_order():
    tasks = [[None] * n for n in (3, 1, 2)]
    # lora-ml.py: round-robin; task 1 runs out in round 2, which ends there (the loop breaks)
    assert turn_order("round-robin", tasks) == [0, 1, 2, 0, 0, 2]
    assert turn_order("blocks", tasks) == [0, 0, 0, 1, 2, 2]  # standard.py: task by task
    assert turn_order("tasks", tasks) == [0, 1, 2]  # reptile.py: each task once
    for turns in ("round-robin", "blocks"):  # every batch of every task once an epoch
        order = turn_order(turns, tasks)
        assert [order.count(t) for t in range(3)] == [3, 1, 2]


def test_in_turn_steps_follow_the_order_over_epochs(model):
    tasks = sized_tasks((3, 1, 2))
    for method, expected in (("lora-ml", [0, 1, 2, 0, 0, 2]), ("standard", [0, 0, 0, 1, 2, 2])):
        res = retrain(model, tasks, method=method, steps=12, tasks_per_step=1,
                      task_order="in-turn", **FAST)
        assert [h["tasks"] for h in res.history] == [[t] for t in expected * 2]
    res = retrain(model, tasks, method="reptile", steps=6, tasks_per_step=1, inner_steps=1,
                  task_order="in-turn", **FAST)
    assert [h["tasks"] for h in res.history] == [[0], [1], [2]] * 2


def test_in_turn_without_an_order_cycles_and_random_stays_the_default():
    config = RetrainConfig(tasks_per_step=2, task_order="in-turn")
    assert [step_tasks(config, 3, s) for s in range(4)] == [[0, 1], [0, 2], [1, 2], [0, 1]]
    default = RetrainConfig(tasks_per_step=2)
    assert default.task_order == "random"
    assert [step_tasks(default, 3, s) for s in range(4)] == [
        step_tasks(RetrainConfig(tasks_per_step=2, task_order="random"), 3, s) for s in range(4)]


# ---- (d) fresh per-task heads -----------------------------------------------------------------

def test_fresh_heads_are_reinitialised_per_task_and_seeded(model):
    base = model.classifier.weight.detach().clone()
    rng = torch.get_rng_state()

    def heads(seed):
        copy = tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1)
        return add_task_heads(copy, "classifier", 3, fresh_seed=seed)

    a, b, c = heads(5), heads(5), heads(6)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    weights = [h.weight for h in a.heads]
    assert all(not torch.equal(w, base) for w in weights)
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a.heads, b.heads, strict=True))
    assert not torch.equal(a.heads[0].weight, c.heads[0].weight)
    copied = add_task_heads(tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1),
                            "classifier", 2)
    assert all(torch.equal(h.weight, base) for h in copied.heads)  # the default: copies


def test_retraining_with_fresh_heads_starts_from_them(model):
    kw = dict(method="last-layer-ml", task_heads="classifier", steps=1, tasks_per_step=1,
              lr=1e-9, progress=False, device="cpu")
    res = retrain(model, sized_tasks((1, 1, 1)), head_init="fresh", **kw)
    untouched = [t for t in range(3) if t not in res.history[0]["tasks"]]
    for t in untouched:  # an absent task's head is exactly its initialisation
        w = res.head_state[f"classifier.heads.{t}.weight"]
        assert not torch.equal(w, model.classifier.weight)
    again = retrain(model, sized_tasks((1, 1, 1)), head_init="fresh", **kw)
    assert all(torch.equal(v, again.head_state[k]) for k, v in res.head_state.items())
    assert torch.equal(res.model.classifier.weight, model.classifier.weight)  # head put back


# ---- (b) stretched schedule -------------------------------------------------------------------

def test_a_stretched_schedule_ends_above_zero_by_the_formula(model):
    steps, warmup, stretch = 20, 0.1, 6.67
    factor = linear_warmup_decay(steps, warmup, stretch)
    warm = 2
    assert factor(steps - 1) == pytest.approx((stretch * steps - (steps - 1))
                                              / (stretch * steps - warm))
    assert factor(steps - 1) > 0.8
    assert linear_warmup_decay(steps, warmup)(steps - 1) == pytest.approx(1 / (steps - warm))
    res = retrain(model, sized_tasks((2, 2)), method="standard", steps=steps, warmup=warmup,
                  schedule_stretch=stretch, **FAST)
    assert res.history[-1]["lr"] == pytest.approx(1e-2 * factor(steps - 1))
    assert [h["lr"] for h in res.history] == pytest.approx(
        [1e-2 * factor(s) for s in range(steps)])


def test_the_largest_task_unit_sizes_the_schedule_as_the_official_scripts(model):
    tasks = sized_tasks((3, 1, 2))  # 6 batches an epoch, the largest task has 3
    config = RetrainConfig(steps=12, schedule_unit="largest-task")
    assert schedule_length(config, "round-robin", tasks) == 6.0  # len(loader_0) x 2 epochs
    assert schedule_length(config, "tasks", tasks) == 12.0  # reptile.py: T x epochs = steps
    assert schedule_length(RetrainConfig(steps=12), "round-robin", tasks) == 12.0
    factor = linear_warmup_decay(12, 0.1, 2.0, unit=6.0)  # warm = ceil(0.6), end at step 12
    assert [factor(s) for s in (0, 1, 11)] == pytest.approx([1 / 2, 11 / 11, 1 / 11])
    res = retrain(model, tasks, method="lora-ml", steps=12, tasks_per_step=1,
                  task_order="in-turn", warmup=0.1, schedule_stretch=2.0,
                  schedule_unit="largest-task", **FAST)
    assert [h["lr"] for h in res.history] == pytest.approx([1e-2 * factor(s) for s in range(12)])
    with pytest.raises(MetanbError, match="schedule_unit largest-task needs tasks with a length"):
        schedule_length(config, "round-robin", [iter(t) for t in tasks])


# ---- (c) Reptile's outer AdamW ----------------------------------------------------------------

class Quadratic(nn.Module):
    """loss = |w - target|²: the inner steps walk w towards the batch's target."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.0, 0.0, 0.0]))

    def forward(self, target: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=((self.w - target.mean(0)) ** 2).sum())


def test_reptile_outer_adamw_moves_theta_towards_phi():
    task = [{"target": torch.tensor([[1.0, -2.0, 3.0]])}]
    kw = dict(method="reptile", steps=1, inner_steps=3, lr=0.1, warmup=0.0, weight_decay=0.0,
              max_grad_norm=None, progress=False, device="cpu")
    toy = Quadratic()
    # φ: the inner loop alone, a fresh AdamW at the (constant) inner lr
    phi = Quadratic()
    inner = torch.optim.AdamW(phi.parameters(), lr=0.1, weight_decay=0.0)
    for _ in range(3):
        inner.zero_grad()
        phi(**task[0]).loss.backward()
        inner.step()
    res = retrain(toy, [task], outer_optimizer="adamw", outer_lr=1e-2, **kw)
    theta0, theta1, phi = toy.w.detach(), res.model.w.detach(), phi.w.detach()
    assert res.history[0]["lr"] == pytest.approx(1e-2)  # the scheduled lr is the outer one
    assert (theta1 - phi).norm() < (theta0 - phi).norm()  # towards φ, not away
    # Adam's first step is lr · g / (|g| + eps), g = (θ - φ) / T: outer_lr towards φ per weight
    torch.testing.assert_close(theta1 - theta0, 1e-2 * torch.sign(phi - theta0),
                               rtol=1e-4, atol=1e-6)
    interpolated = retrain(toy, [task], meta_step=0.5, **kw).model.w.detach()
    torch.testing.assert_close(interpolated, theta0 + 0.5 * (phi - theta0))  # the default


# ---- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(task_order="shuffled"), "unknown task_order 'shuffled'; choose from random, in-turn"),
    (dict(head_init="zeros"), "unknown head_init 'zeros'; choose from copy, fresh"),
    (dict(schedule_stretch=0.5), "schedule_stretch must be >= 1, got 0.5"),
    (dict(outer_optimizer="sgd"), "unknown outer_optimizer 'sgd'; choose from interpolate, adamw"),
    (dict(outer_lr=0.0), "outer_lr must be > 0, got 0.0"),
    (dict(schedule_unit="epochs"), "unknown schedule_unit 'epochs'; choose from steps, "
     "largest-task"),
])
def test_bad_values_are_one_line(kwargs, message):
    with pytest.raises(MetanbError, match=message):
        RetrainConfig(**kwargs)


def test_the_settings_are_set_keys_and_the_paper_profile_uses_them():
    paper = load_profile("paper").validate()
    r = paper.retrain
    assert (r.task_order, r.head_init, r.schedule_stretch, r.schedule_unit, r.outer_optimizer,
            r.outer_lr) == ("in-turn", "fresh", 6.67, "largest-task", "adamw", 1e-4)
    with pytest.raises(MetanbError, match="unknown retrain.task_order 'x'"):
        load_profile("paper").override(["retrain.task_order=x"]).validate()
    quick = load_profile("quick").validate().retrain
    assert (quick.task_order, quick.head_init, quick.schedule_stretch, quick.schedule_unit,
            quick.outer_optimizer) == ("random", "copy", 1.0, "steps", "interpolate")
