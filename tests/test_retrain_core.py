"""The retraining core: absent tasks stay put, gradient checkpointing, safe checkpoints, seeding."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from metanb import MetanbError
from metanb.lora import add_multi_lora
from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.retrain import RetrainConfig, TaskAdamW, retrain

VOCAB = 40
FAST = dict(rank=2, lr=1e-2, progress=False, device="cpu")


@pytest.fixture
def model():
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1)


def tasks(T: int, batches: int = 2):
    return [random_multiple_choice_batches(VOCAB, batches, 4, 2, 6, seed=t) for t in range(T)]


# ---- the optimiser ---------------------------------------------------------------------------

def test_task_adamw_equals_torch_adamw_bit_for_bit_on_ordinary_parameters() -> None:
    g = torch.Generator().manual_seed(0)
    ours = torch.randn(5, 3, generator=g, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    a = TaskAdamW([ours], lr=0.05, weight_decay=0.1)
    b = torch.optim.AdamW([theirs], lr=0.05, weight_decay=0.1)
    for _ in range(12):
        grad = torch.randn(5, 3, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    assert torch.equal(ours, theirs)
    assert torch.equal(a.state[ours]["exp_avg_sq"], b.state[theirs]["exp_avg_sq"])


def test_absent_task_rows_and_their_state_are_untouched_bit_for_bit() -> None:
    """Rows = tasks. Tasks 1 and 3 sit out step 3: weight decay and momentum leave them alone,
    and a present row follows AdamW with its *own* step count (bias correction included)."""
    g = torch.Generator().manual_seed(1)
    stacked = torch.randn(4, 2, 3, generator=g, requires_grad=True)
    rows = [stacked.detach()[t].clone().requires_grad_(True) for t in range(4)]
    opt = TaskAdamW([{"params": [stacked], "num_tasks": 4}], lr=0.1, weight_decay=0.5)
    refs = [torch.optim.AdamW([r], lr=0.1, weight_decay=0.5) for r in rows]
    schedule = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 2], [2], [1, 3]]
    for present in schedule:
        grad = torch.randn(4, 2, 3, generator=g)
        for t in range(4):  # absent tasks have zero gradient rows, as in a mixed batch
            if t not in present:
                grad[t] = 0
        before = stacked.detach().clone()
        state = {k: v.clone() for k, v in opt.state[stacked].items()} if opt.state else None
        stacked.grad = grad
        opt.set_tasks(present)
        opt.step()
        for t in range(4):
            if t in present:
                rows[t].grad = grad[t].clone()
                refs[t].step()
            else:
                assert torch.equal(stacked.detach()[t], before[t])
                if state is not None:
                    for key in ("exp_avg", "exp_avg_sq"):
                        assert torch.equal(opt.state[stacked][key][t], state[key][t])
                    assert opt.state[stacked]["step"][t] == state["step"][t]
    for t in range(4):
        assert torch.allclose(stacked.detach()[t], rows[t].detach(), rtol=1e-6, atol=1e-7)
    assert opt.state[stacked]["step"].tolist() == [3, 3, 4, 3]


def test_the_multi_tensor_update_equals_torch_adamw_bit_for_bit_on_many_tensors() -> None:
    """One foreach call per operation over tensors of many shapes (and a frozen one, with no
    gradient, that neither moves nor gets state) gives torch's AdamW bit for bit."""
    g = torch.Generator().manual_seed(2)
    shapes = [(5, 3), (7,), (4, 2, 3), (1,), (16, 16)]
    ours = [torch.randn(s, generator=g, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    frozen = torch.randn(3, generator=g, requires_grad=True)
    start = frozen.detach().clone()
    a = TaskAdamW(ours + [frozen], lr=0.05, weight_decay=0.1)
    b = torch.optim.AdamW(theirs, lr=0.05, weight_decay=0.1, foreach=False)
    for _ in range(12):
        for p, q in zip(ours, theirs, strict=True):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a.state[p][key], b.state[q][key])
    assert torch.equal(frozen, start) and frozen not in a.state


def test_every_stacked_tensor_follows_its_rows_own_adamw_through_full_and_partial_steps(
) -> None:
    """Several task-stacked tensors of different shapes: steps with every task (the
    multi-tensor path) and with some (the row path) interleave; each row is torch's AdamW with
    its own step count, absent rows stay put, and the state loads into a fresh optimiser."""
    g = torch.Generator().manual_seed(3)
    T, shapes = 3, [(2, 5), (6, 2), (4,)]
    stacked = [torch.randn((T, *s), generator=g, requires_grad=True) for s in shapes]
    rows = [[p.detach()[t].clone().requires_grad_(True) for t in range(T)] for p in stacked]
    opt = TaskAdamW([{"params": stacked, "num_tasks": T}], lr=0.1, weight_decay=0.5)
    refs = [[torch.optim.AdamW([r], lr=0.1, weight_decay=0.5) for r in rs] for rs in rows]
    for present in [None, [0, 1, 2], [1], [2, 0], None, [0]]:
        on = list(range(T)) if present is None else present
        before = [p.detach().clone() for p in stacked]
        for p, rs, rf in zip(stacked, rows, refs, strict=True):
            p.grad = torch.randn(p.shape, generator=g)
            for t in on:
                rs[t].grad = p.grad[t].clone()
                rf[t].step()
        opt.set_tasks(present)
        opt.step()
        for p, b in zip(stacked, before, strict=True):
            for t in set(range(T)) - set(on):
                assert torch.equal(p.detach()[t], b[t])
    for p, rs in zip(stacked, rows, strict=True):
        for t in range(T):
            assert torch.allclose(p.detach()[t], rs[t].detach(), rtol=1e-6, atol=1e-7)
        assert opt.state[p]["step"].tolist() == [5, 4, 4]
    fresh = TaskAdamW([{"params": stacked, "num_tasks": T}], lr=0.1, weight_decay=0.5)
    fresh.load_state_dict(opt.state_dict())
    for p in stacked:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[p][key], opt.state[p][key])


def test_a_lora_ml_step_leaves_the_adapters_of_absent_tasks_as_they_were(model) -> None:
    config = RetrainConfig(method="lora-ml", r=2, steps=2, lr=0.1, weight_decay=0.5,
                           tasks_per_step=1, seed=4, device="cpu")
    res = retrain(model, tasks(4), config, progress=False)
    drawn = {t for h in res.history for t in h["tasks"]}
    assert 1 <= len(drawn) <= 2
    torch.manual_seed(config.seed)  # the loop's initialisation, reproduced
    start = add_multi_lora(copy.deepcopy(model), config.lora_config(4)).state_dict()
    for name, value in res.adapter_state.items():
        if name.endswith("lora_A"):
            for t in range(4):
                same = torch.equal(value[t], start[name][t])
                assert same == (t not in drawn), (name, t, drawn)


# ---- gradient checkpointing ------------------------------------------------------------------

def test_lora_ml_trains_with_gradient_checkpointing_and_matches_the_plain_run(model) -> None:
    plain = retrain(model, tasks(3), method="lora-ml", steps=3, **FAST)
    checkpointed = copy.deepcopy(model)
    checkpointed.gradient_checkpointing_enable()
    res = retrain(checkpointed, tasks(3), method="lora-ml", steps=3, **FAST)
    assert [h["loss"] for h in res.history] == pytest.approx(
        [h["loss"] for h in plain.history], rel=1e-5)
    for a, b in zip(plain.model.parameters(), res.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


# ---- checkpoints -----------------------------------------------------------------------------

class Payload:
    """Unpickling this object would create ``marker``: it must never be unpickled."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_never_run(model, tmp_path):
    evil = Payload()
    evil.marker = tmp_path / "payload-ran"
    path = tmp_path / "run.pt"
    torch.save({"format": 2, "config": {}, "evil": evil}, path)
    assert not evil.marker.exists()
    with pytest.raises(MetanbError, match=r"refusing .*run.pt: it holds pickled objects"):
        retrain(model, tasks(2), method="lora-ml", steps=2, checkpoint=path, **FAST)
    assert not evil.marker.exists()


def test_checkpoints_are_written_atomically_and_resume_on_another_device_setting(model,
                                                                                 tmp_path):
    path = tmp_path / "ck" / "run.pt"
    first = retrain(model, tasks(2), method="lora-ml", steps=4, checkpoint=path,
                    checkpoint_every=2, **FAST)
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt"]  # no temporary left
    again = retrain(model, tasks(2), method="lora-ml", steps=4, checkpoint=path,
                    **{**FAST, "device": "auto"})  # where a run trains is not what it is
    assert again.resumed_from == 4
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


# ---- the API ---------------------------------------------------------------------------------

def test_retrain_leaves_the_callers_random_state_alone(model) -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    retrain(model, tasks(2), method="lora-ml", steps=2, **FAST)
    assert torch.equal(torch.rand(3), expected)


def test_a_config_object_and_keyword_overrides_name_the_same_run(model) -> None:
    config = RetrainConfig(method="lora-ml", r=2, steps=5, lr=1e-2, device="cpu")
    a = retrain(model, tasks(2), config, steps=2, progress=False)
    b = retrain(model, tasks(2), method="lora-ml", rank=2, steps=2, lr=1e-2, device="cpu",
                progress=False)
    assert a.config == b.config and a.config.steps == 2 and a.config.rank == 2
    assert retrain(model, tasks(2), config, rank=1, steps=1, progress=False).config.r == 1
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    with pytest.raises(MetanbError, match="pass either rank or r, not both"):
        retrain(model, tasks(2), rank=2, r=3)


def test_inplace_retraining_returns_the_callers_model(model) -> None:
    res = retrain(model, tasks(2), method="standard", steps=1, inplace=True, **FAST)
    assert res.model is model
