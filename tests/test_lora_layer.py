"""metanb.lora: the adapted Linear, injection by name, per-example task ids."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from torch import nn

from metanb import MetanbError
from metanb.lora import (
    MultiLoraConfig,
    MultiLoraLinear,
    adapter_parameters,
    adapter_state_dict,
    add_multi_lora,
    find_target_modules,
    matches_target,
    multi_lora_layers,
    remove_multi_lora,
    use_tasks,
)
from metanb.models import random_multiple_choice_batches, tiny_roberta

VOCAB = 40
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def randomize_adapters(model: nn.Module, seed: int = 0) -> None:
    """Fresh adapters compute nothing (B = 0); give them weights so tests can see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.fixture
def base() -> nn.Module:
    return tiny_roberta(VOCAB, seed=0, **NO_DROPOUT).eval()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return random_multiple_choice_batches(VOCAB, 1, batch_size=6, choices=3, length=7)[0]


@pytest.mark.parametrize("symmetric", [False, True])
def test_mixed_forward_equals_peft_with_that_tasks_adapter_only(base, batch, symmetric):
    T, r, alpha = 3, 4, 8
    targets = ("query", "value") if not symmetric else ("query", "value", "attention.output.dense")
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(
        num_tasks=T, rank=r, alpha=alpha, target_modules=targets, symmetric=symmetric))
    randomize_adapters(model)
    ids = torch.tensor([2, 0, 1, 1, 2, 0])
    with torch.no_grad(), use_tasks(model, ids):
        mixed = model(**batch).logits
    for t in range(T):
        peft_model = get_peft_model(
            copy.deepcopy(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets)))
        result = set_peft_model_state_dict(peft_model, adapter_state_dict(model, t))
        assert not result.unexpected_keys
        sel = ids == t
        with torch.no_grad():
            alone = peft_model.eval()(**{k: v[sel] for k, v in batch.items()}).logits
        assert (alone - mixed[sel]).abs().max().item() <= 1e-5
    # and the adapters matter: task 0's examples through task 1's adapter give other logits
    with torch.no_grad(), use_tasks(model, torch.ones(6, dtype=torch.long)):
        assert (model(**batch).logits[ids == 0] - mixed[ids == 0]).abs().max() > 1e-3


def test_layer_applies_each_examples_adapter_with_repeat_interleave_semantics():
    torch.manual_seed(0)
    linear = nn.Linear(5, 4)
    layer = MultiLoraLinear(linear, MultiLoraConfig(num_tasks=3, rank=2, alpha=3.0))
    with torch.no_grad():
        layer.lora_B.normal_()
    ids = torch.tensor([2, 0])
    x = torch.randn(2 * 3, 7, 5)  # (batch * choices, seq, in), example-major as in HF models
    layer.task_ids = ids
    got = layer(x)
    per_row = ids.repeat_interleave(3)
    expected = torch.stack([
        linear(x[i]) + 1.5 * x[i] @ (layer.lora_B[t] @ layer.lora_A[t]).T
        for i, t in enumerate(per_row.tolist())
    ])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(layer.delta_weight(2), 1.5 * layer.lora_B[2] @ layer.lora_A[2])


def test_fresh_asymmetric_adapters_leave_outputs_exactly_unchanged(base, batch):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=2, rank=4))
    with torch.no_grad(), use_tasks(model, [0, 1, 0, 1, 0, 1]):
        adapted = model(**batch).logits
    with torch.no_grad():
        assert torch.equal(adapted, base(**batch).logits)
    layer = next(iter(multi_lora_layers(model).values()))
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(layer.in_features)  # PEFT's kaiming-uniform(a=sqrt 5) bound
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.5 * bound


def test_symmetric_adapters_start_small_but_not_zero(base, batch):
    cfg = MultiLoraConfig(num_tasks=2, rank=4, symmetric=True, init_scale=0.1)
    model = add_multi_lora(copy.deepcopy(base), cfg)
    layer = next(iter(multi_lora_layers(model).values()))
    bound = 0.1 / math.sqrt(layer.in_features)
    U = layer.lora_U
    assert U.shape == (2, layer.in_features, 4)
    assert 0.5 * bound < U.abs().max() <= bound
    A, B = layer.factors()
    torch.testing.assert_close(A, U.transpose(1, 2))
    torch.testing.assert_close(layer.delta_weight(1), cfg.scaling * U[1] @ U[1].T)
    with torch.no_grad(), use_tasks(model, [0, 1, 0, 1, 0, 1]):
        diff = (model(**batch).logits - base(**batch).logits).abs().max()
    assert 0 < diff < 1e-2  # near the base, not at it: U = 0 would be a saddle


def test_adapter_t_gets_zero_gradient_from_other_tasks_examples(base, batch):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=3, rank=2))
    randomize_adapters(model)  # with B = 0 the gradient of A would vanish for another reason
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    layer = multi_lora_layers(model)["roberta.encoder.layer.0.attention.self.query"]
    for t in range(3):
        model.zero_grad()
        with use_tasks(model, ids):
            logits = model(**batch).logits
        logits[ids != t].square().sum().backward()  # a loss on the other tasks' examples only
        assert torch.count_nonzero(layer.lora_A.grad[t]) == 0
        assert torch.count_nonzero(layer.lora_B.grad[t]) == 0
        others = [s for s in range(3) if s != t]
        assert all(layer.lora_A.grad[s].abs().sum() > 0 for s in others)


def test_leading_dim_not_a_multiple_of_task_ids_is_an_error(base, batch):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=2, rank=2))
    with use_tasks(model, [0, 1, 0, 1]), pytest.raises(MetanbError, match="has 6 examples"):
        model(**batch)  # 6 examples, 4 ids: refused at the root, before any layer runs
    layer = next(iter(multi_lora_layers(model).values()))
    layer.task_ids = [0, 1, 0, 1]
    with pytest.raises(MetanbError, match="leading dimension of 18, which is not a multiple"):
        layer(torch.randn(18, 64))  # a layer called directly checks its rows too


def test_forward_without_task_ids_is_an_error(base, batch):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=2, rank=2))
    with pytest.raises(MetanbError, match="use_tasks"):
        model(**batch)


@pytest.mark.parametrize("ids, message", [
    ([0, 3], "out of range.*0..2"),
    ([-1, 0], "out of range"),
    ([0.0, 1.0], "integer"),
    ([[0, 1]], "1-D"),
])
def test_task_ids_are_validated(base, ids, message):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=3, rank=2))
    with pytest.raises(MetanbError, match=message):
        with use_tasks(model, torch.tensor(ids)):
            pass


def test_use_tasks_sets_the_layers_and_keeps_them_for_backward(base):
    model = add_multi_lora(copy.deepcopy(base), MultiLoraConfig(num_tasks=3, rank=2))
    layer = next(iter(multi_lora_layers(model).values()))
    with use_tasks(model, [1, 2]):
        with use_tasks(model, [0]):
            assert layer.task_ids.tolist() == [0]
        assert layer.task_ids.tolist() == [0]  # until the next root forward
    assert layer.task_ids.tolist() == [0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "rank must be at least 1"),
    (dict(rank=65), "rank 65 does not fit .*use 1 <= rank <= 64"),
    (dict(rank=2, target_modules=("classifier",)), "rank 2 does not fit layer 'classifier'"),
    (dict(num_tasks=0), "num_tasks"),
    (dict(dropout=1.0), "dropout"),
    (dict(symmetric=True, target_modules=("intermediate.dense",)), "square layer"),
])
def test_bad_configs_are_clear_errors(base, kwargs, message):
    with pytest.raises(MetanbError, match=message):
        add_multi_lora(base, MultiLoraConfig(**{"num_tasks": 2, **kwargs}))
    assert not multi_lora_layers(base)


def test_no_matching_layer_lists_the_models_linear_names(base):
    with pytest.raises(MetanbError) as err:
        add_multi_lora(base, MultiLoraConfig(num_tasks=2, target_modules=("q_proj",)))
    message = str(err.value)
    for name in ("query", "key", "value", "dense", "classifier"):
        assert f"'{name}'" in message


def test_targets_match_like_peft_suffix_exact_or_regex(base):
    value = find_target_modules(base, ("value",))
    assert value == [f"roberta.encoder.layer.{i}.attention.self.value" for i in range(2)]
    full = "roberta.encoder.layer.1.attention.self.query"
    assert find_target_modules(base, (full,)) == [full]
    regex = r".*\.layer\.0\.attention\.self\.(query|key)"
    assert find_target_modules(base, regex) == [
        "roberta.encoder.layer.0.attention.self.query",
        "roberta.encoder.layer.0.attention.self.key",
    ]
    assert not matches_target("roberta.encoder.layer.0.attention.self.value", ("alue",))
    with pytest.raises(MetanbError):  # a string is a regex on the full name: no bare "value"
        find_target_modules(base, "value")


def test_remove_gives_back_plain_linears_with_trained_weights(base):
    names = list(base.state_dict())
    frozen_before = {n: p.requires_grad for n, p in base.named_parameters()}
    base.roberta.embeddings.word_embeddings.weight.requires_grad_(False)
    model = add_multi_lora(base, MultiLoraConfig(num_tasks=2, rank=2, train_base=False))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if ".lora_" in n}
    assert "roberta.encoder.layer.0.attention.self.query.base_layer.weight" in model.state_dict()
    layer = multi_lora_layers(model)["roberta.encoder.layer.0.attention.self.query"]
    with torch.no_grad():
        layer.base_layer.weight.add_(1.0)  # stands for training
    trained = layer.base_layer.weight.clone()
    with pytest.raises(MetanbError, match="already"):
        add_multi_lora(model, MultiLoraConfig(num_tasks=2))
    remove_multi_lora(model)
    assert list(model.state_dict()) == names
    assert type(model.roberta.encoder.layer[0].attention.self.query) is nn.Linear
    assert torch.equal(model.roberta.encoder.layer[0].attention.self.query.weight, trained)
    restored = {n: p.requires_grad for n, p in model.named_parameters()}
    assert restored == {**frozen_before, "roberta.embeddings.word_embeddings.weight": False}


def test_config_reads_with_pefts_names_too():
    cfg = MultiLoraConfig(num_tasks=2, rank=3, alpha=6.0, dropout=0.1)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.scaling) == (3, 6.0, 0.1, 2.0)
