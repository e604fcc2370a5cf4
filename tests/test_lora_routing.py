"""metanb.lora.routing: task ids for the whole forward and backward, and the mixed forward.

Gradient checkpointing re-runs blocks during backward, outside any ``with`` block: the ids
must still be there. The mixed forward splits contiguous task runs instead of copying one
adapter per example: it must equal the per-example reference in every order.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metanb import MetanbError
from metanb.lora import (
    MultiLoraConfig,
    MultiLoraLinear,
    TaskRouting,
    add_multi_lora,
    multi_lora_layers,
    remove_multi_lora,
    use_tasks,
)
from metanb.models import random_multiple_choice_batches, tiny_roberta
from tests.test_lora_layer import randomize_adapters

VOCAB = 40
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
IDS = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return tiny_roberta(VOCAB, seed=0, **NO_DROPOUT)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return random_multiple_choice_batches(VOCAB, 1, batch_size=6, choices=3, length=7)[0]


def adapted(base: nn.Module, checkpointing: dict | None = None) -> nn.Module:
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=3, rank=2))
    randomize_adapters(model)
    if checkpointing is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    return model.train()  # checkpointing is active in training mode only


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def reference_grads(base, batch) -> dict[str, torch.Tensor]:
    model = adapted(base)
    with use_tasks(model, IDS):
        model(**batch).loss.backward()
    return gradients(model)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")
@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("how", ["use_tasks", "task_ids kwarg"])
def test_backward_outside_the_block_under_gradient_checkpointing(
        base, batch, reference_grads, reentrant, how):
    model = adapted(base, {"use_reentrant": reentrant})
    if how == "use_tasks":
        with use_tasks(model, IDS):
            loss = model(**batch).loss
    else:
        loss = model(**batch, task_ids=IDS).loss
    loss.backward()  # re-runs every checkpointed encoder layer, after the block has closed
    got = gradients(model)
    assert got.keys() == reference_grads.keys()
    assert any(".lora_" in n for n in got) and any("base_layer" in n for n in got)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_a_root_forward_without_ids_after_the_block_is_refused(base, batch):
    model = adapted(base).eval()
    with torch.no_grad(), use_tasks(model, IDS):
        model(**batch)
    with torch.no_grad(), pytest.raises(MetanbError, match="no task ids; call the model with "
                                        r"task_ids=\.\.\. or run it inside `with use_tasks"):
        model(**batch)  # the block's ids were for the block's forwards only


def test_the_kwarg_routes_like_use_tasks_and_wins_inside_a_block(base, batch):
    model = adapted(base).eval()
    with torch.no_grad():
        by_kwarg = model(**batch, task_ids=IDS).logits
        with use_tasks(model, IDS):
            by_block = model(**batch).logits
        with use_tasks(model, torch.zeros(6, dtype=torch.long)):
            assert torch.equal(model(**batch, task_ids=IDS).logits, by_kwarg)
            other = model(**batch).logits
    assert torch.equal(by_kwarg, by_block)
    assert (other - by_kwarg).abs().max() > 1e-3  # and the ids matter


def test_blocks_nest_for_the_next_forward(base, batch):
    model = adapted(base).eval()
    with torch.no_grad():
        outer, inner = model(**batch, task_ids=IDS).logits, model(**batch, task_ids=IDS.flip(0))
        with use_tasks(model, IDS):
            with use_tasks(model, IDS.flip(0)):
                assert torch.equal(model(**batch).logits, inner.logits)
            assert torch.equal(model(**batch).logits, outer)


@pytest.mark.parametrize("ids, message", [
    (torch.tensor([0, 1, 2, 0]), "the batch has 6 examples .* but 4 task ids"),
    (torch.tensor([0, 3, 0, 0, 0, 0]), "task id 3 is out of range"),
    (torch.tensor([[0, 1, 2, 0, 1, 2]]), "1-D"),
])
def test_bad_ids_are_refused_at_the_root(base, batch, ids, message):
    model = adapted(base).eval()
    with torch.no_grad(), pytest.raises(MetanbError, match=message):
        model(**batch, task_ids=ids)


def test_a_deep_copy_routes_its_own_layers_and_removal_drops_the_hook(base, batch):
    model = adapted(base).eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin(**batch, task_ids=IDS)
    assert all(layer.task_ids is None for layer in multi_lora_layers(model).values())
    assert all(torch.equal(layer.task_ids, IDS) for layer in multi_lora_layers(twin).values())
    remove_multi_lora(twin)
    assert not twin._forward_pre_hooks and not multi_lora_layers(twin)
    with torch.no_grad():
        twin(**batch)  # a plain model again


@pytest.mark.parametrize("ids, runs, equal", [
    ([0, 0, 2, 2, 1, 1], ((0, 0, 2), (2, 2, 4), (1, 4, 6)), True),
    ([3, 3, 3, 0], ((3, 0, 3), (0, 3, 4)), False),
    ([1, 1], ((1, 0, 2),), True),
    ([0, 1, 0], None, False),
])
def test_routing_finds_contiguous_task_runs(ids, runs, equal):
    routing = TaskRouting.build(ids, num_tasks=4)
    assert routing.runs == runs and routing.equal_runs is equal
    assert routing.ids.tolist() == ids


def reference(layer: MultiLoraLinear, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Example by example: base(x_i) + ΔW_t x_i, ΔW_t = (alpha / r) B_t A_t."""
    rows = ids.repeat_interleave(x.shape[0] // ids.shape[0])
    return torch.stack([layer.base_layer(x[i]) + x[i] @ layer.delta_weight(t).T
                        for i, t in enumerate(rows.tolist())])


@pytest.mark.parametrize("ids", [
    [2, 2, 0, 0, 1, 1],  # contiguous, equal runs: one batched matmul
    [1, 1, 2, 2, 3, 3],  # consecutive tasks: the batched matmul on a view of the adapters
    [0, 0, 1, 1, 2, 2],  # tasks 0..2 of 4, in order: a view too (task 3 absent)
    [3, 0, 0, 0, 2, 2],  # contiguous, unequal runs: one matmul pair per run
    [1, 1, 1, 1, 1, 1],  # one task
    [0, 2, 1, 2, 0, 3],  # any order: one adapter copy per example
], ids=["equal-runs", "consecutive", "first-three", "unequal-runs", "one-task", "shuffled"])
def test_every_path_of_the_mixed_forward_equals_the_per_example_reference(ids):
    torch.manual_seed(0)
    layer = MultiLoraLinear(nn.Linear(5, 4), MultiLoraConfig(num_tasks=4, rank=2, alpha=3.0))
    with torch.no_grad():
        layer.lora_B.normal_()
    ids = torch.tensor(ids)
    x = torch.randn(6 * 3, 7, 5, requires_grad=True)  # (examples x choices, seq, in)
    layer.task_ids = ids
    got = layer(x)
    expected = reference(layer, x, ids)
    torch.testing.assert_close(got, expected)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (x, layer.lora_A, layer.lora_B), g)
    want = torch.autograd.grad(expected, (x, layer.lora_A, layer.lora_B), g)
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b)
    absent = sorted(set(range(4)) - set(ids.tolist()))
    assert all(torch.count_nonzero(grads[1][t]) == 0 and torch.count_nonzero(grads[2][t]) == 0
               for t in absent)


def test_contiguous_and_shuffled_batches_agree_to_1e6_with_gradients(base, batch):
    model = adapted(base).eval()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    while TaskRouting.build(IDS[perm], 3).runs is not None:  # make sure it is not contiguous
        perm = torch.randperm(6)
    shuffled = {k: v[perm] for k, v in batch.items()}
    logits = model(**batch, task_ids=IDS).logits
    logits[perm].square().sum().backward()
    contiguous = gradients(model)
    model.zero_grad()
    other = model(**shuffled, task_ids=IDS[perm]).logits
    assert (other - logits[perm]).abs().max().item() <= 1e-6
    other.square().sum().backward()
    for name, grad in gradients(model).items():
        assert (grad - contiguous[name]).abs().max().item() <= 1e-6, name


def test_adapters_of_tasks_absent_from_the_batch_get_exactly_zero_gradient(base, batch):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=5, rank=2))
    randomize_adapters(model)
    model(**batch, task_ids=torch.tensor([1, 1, 1, 3, 3, 3])).loss.backward()
    for layer in multi_lora_layers(model).values():
        for grad in (layer.lora_A.grad, layer.lora_B.grad):
            assert torch.count_nonzero(grad[[0, 2, 4]]) == 0
            assert grad[1].abs().sum() > 0 and grad[3].abs().sum() > 0
