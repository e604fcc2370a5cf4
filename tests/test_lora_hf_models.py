"""metanb.lora on causal LMs: tiny random GPT-2 (Conv1D layers) and Llama (nn.Linear), offline.

Adapting, routing and gradient checkpointing on both; LoRA-ML retraining of a causal LM
(labels = input ids); the exported base loads with ``AutoModelForCausalLM``, PEFT fine-tunes
it, and the T exported adapters reproduce the multi-task model under PEFT. The planted-base
check of the theory runs on one GPT-2 ``Conv1D`` and on one ``nn.Linear`` subclass (a whole
tiny LM has no closed-form base to recover).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM, GPT2LMHeadModel, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from metanb import MetanbError
from metanb.finetune import evaluate_causal_lm, finetune_lora
from metanb.lora import (
    MultiLoraConfig,
    add_multi_lora,
    export_adapters,
    export_base,
    linear_module_names,
    multi_lora_layers,
)
from metanb.models import causal_lm_labels, tiny_causal_lm
from metanb.retrain import retrain
from tests.test_lora_layer import randomize_adapters

VOCAB, LENGTH, T = 32, 12, 3
TARGETS = {"gpt2": ("c_attn", "c_proj"), "llama": ("q_proj", "v_proj", "o_proj")}
CLASSES = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}
NO_DROPOUT = {"gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), "llama": {}}
KINDS = sorted(TARGETS)


def plain(kind: str) -> nn.Module:
    return tiny_causal_lm(kind, VOCAB, seed=0, **NO_DROPOUT[kind])


def task_batches(task: int, batches: int, size: int = 4, seed: int = 0) -> list[dict]:
    """Task t counts up in steps of t + 1 (mod the ordinary tokens 3..V-1): learnable, and
    different per task. The last row of each batch ends in 3 padding tokens."""
    g = torch.Generator().manual_seed(1000 * task + seed)
    out = []
    for _ in range(batches):
        start = torch.randint(0, VOCAB - 3, (size, 1), generator=g)
        ids = 3 + (start + (task + 1) * torch.arange(LENGTH)) % (VOCAB - 3)
        mask = torch.ones_like(ids)
        mask[-1, -3:] = 0
        ids = ids.masked_fill(mask == 0, 0)
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": causal_lm_labels(ids, mask)})
    return out


def adapted(kind: str) -> nn.Module:
    model = add_multi_lora(plain(kind), MultiLoraConfig(num_tasks=T, rank=4, alpha=8,
                                                        target_modules=TARGETS[kind]))
    randomize_adapters(model)
    return model


@pytest.fixture(scope="module")
def mixed() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One batch of 6 examples, 2 per task, contiguous as the loop builds them."""
    parts = [task_batches(t, 1, size=2)[0] for t in range(T)]
    ids = torch.arange(T).repeat_interleave(2)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, ids


@pytest.mark.parametrize("kind", KINDS)
def test_layers_are_adapted_and_show_their_base_weight_and_bias(kind):
    model = adapted(kind)
    layers = multi_lora_layers(model)
    # 2 blocks; GPT-2 has c_proj in attention and MLP, Llama q, v and o projections
    assert len(layers) == 6
    for layer in layers.values():
        assert isinstance(layer.base_layer, Conv1D if kind == "gpt2" else nn.Linear)
        assert layer.weight is layer.base_layer.weight and layer.bias is layer.base_layer.bias
    first = next(iter(layers.values()))
    # GPT-2's c_attn maps 64 -> 3 x 64 with a (64, 192) weight; Llama's q_proj 64 -> 64
    assert (first.in_features, first.out_features) == ((64, 192) if kind == "gpt2" else (64, 64))
    assert first.lora_A.shape == (T, 4, 64) and first.lora_B.shape == (T, first.out_features, 4)


def test_no_match_lists_gpt2s_conv1d_names():
    with pytest.raises(MetanbError) as err:
        add_multi_lora(plain("gpt2"), MultiLoraConfig(num_tasks=2, target_modules=("query",)))
    assert "['c_attn', 'c_fc', 'c_proj', 'lm_head']" in str(err.value)


def test_linear_subclasses_are_candidates_but_not_multihead_attentions_out_proj():
    class Projection(nn.Linear):
        pass

    model = nn.Sequential(Projection(4, 4), nn.MultiheadAttention(4, 2))
    assert linear_module_names(model) == ["0"]  # out_proj's weight is read past its forward


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_checkpointing_gives_the_same_gradients(kind, mixed):
    batch, ids = mixed
    grads = []
    for checkpointing in (False, True):
        model = adapted(kind).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**batch, task_ids=ids).loss.backward()  # the re-run happens in here
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(".lora_" in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_causal_lm_score_is_the_token_mean_of_hugging_faces_loss():
    model = plain("gpt2").eval()
    batches = task_batches(0, 2)
    tokens = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert tokens == [4 * (LENGTH - 1) - 3] * 2  # padding is not scored
    with torch.no_grad():
        losses = [model(**b).loss.item() for b in batches]
    score = evaluate_causal_lm(model, [{k: v for k, v in b.items() if k != "labels"}
                                       for b in batches])
    assert score.tokens == sum(tokens)
    pooled = sum(n * x for n, x in zip(tokens, losses, strict=True)) / sum(tokens)
    assert score.loss == pytest.approx(pooled)
    assert score.perplexity == pytest.approx(torch.tensor(score.loss).exp().item())


@pytest.fixture(scope="module", params=KINDS)
def retrained(request):
    """LoRA-ML retraining of a tiny causal LM on T next-token tasks (labels = input ids)."""
    kind = request.param
    tasks = [task_batches(t, 4) for t in range(T)]
    model = plain(kind)
    before = [evaluate_causal_lm(model, tasks[t]).loss for t in range(T)]
    res = retrain(model, tasks, method="lora-ml", rank=4, steps=30, lr=1e-2,
                  target_modules=TARGETS[kind], seed=0, device="cpu", progress=False)
    return kind, model, tasks, before, res


def test_lora_ml_retraining_lowers_every_tasks_loss(retrained):
    kind, _, tasks, before, res = retrained
    assert type(res.model) is CLASSES[kind] and not multi_lora_layers(res.model)
    losses = [h["loss"] for h in res.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    with_adapters = res.with_adapters()
    for t in range(T):
        assert evaluate_causal_lm(with_adapters, tasks[t], task=t).loss < 0.5 * before[t]


def test_exported_base_loads_with_exactly_the_plain_models_names(retrained, tmp_path):
    kind, model, _, _, res = retrained
    adapted_model = res.with_adapters()
    export_base(adapted_model, tmp_path / "base")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert type(loaded) is CLASSES[kind]
    assert list(loaded.state_dict()) == list(model.state_dict())
    for name, layer in multi_lora_layers(adapted_model).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.base_layer.weight)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


def test_peft_lora_fine_tunes_the_exported_base(retrained, tmp_path):
    kind, _, _, _, res = retrained
    export_base(res.model, tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    new_task = task_batches(T, 2)  # steps of T + 1: a task retraining never saw
    tuned = finetune_lora(base, new_task, rank=2, target_modules=list(TARGETS[kind]), steps=20,
                          lr=3e-2, seed=0)
    assert isinstance(tuned, PeftModel)
    assert evaluate_causal_lm(tuned, new_task).loss < 0.7 * evaluate_causal_lm(base, new_task).loss


def test_exported_adapters_reproduce_every_task_under_peft(retrained, mixed, tmp_path):
    kind, _, _, _, res = retrained
    model = res.with_adapters().eval()
    batch, ids = mixed
    export_base(model, tmp_path / "base")
    paths = export_adapters(model, tmp_path / "adapters")
    assert paths == [tmp_path / "adapters" / f"task_{t}" for t in range(T)]
    config = json.loads((paths[0] / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is (kind == "gpt2")
    assert sorted(config["target_modules"]) == sorted(multi_lora_layers(model))
    with torch.no_grad():
        together = model(**batch, task_ids=ids).logits
    for t, path in enumerate(paths):
        peft_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tmp_path / "base"), path).eval()
        rows = ids == t
        with torch.no_grad():
            alone = peft_model(**{k: v[rows] for k, v in batch.items()}).logits
        assert (alone - together[rows]).abs().max().item() <= 1e-5


# --- the planted base of the theory, on a Conv1D and on an nn.Linear subclass --------------

D, K = 8, 1


class Projection(nn.Linear):
    """A subclass of nn.Linear, as some architectures define their own."""


class Regression(nn.Module):
    """y = layer(x), squared loss summed over outputs (as tests/test_retrain_planted.py)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=(self.layer(x) - labels).square().sum(-1).mean())


@pytest.mark.parametrize("layer", ["conv1d", "linear-subclass"])
def test_lora_ml_recovers_the_planted_base_of_one_adapted_layer(layer):
    g = torch.Generator().manual_seed(0)
    A_star = torch.randn(D, D, generator=g, dtype=torch.float64) / D**0.5
    U_star = torch.randn(T + 2, D, K, generator=g, dtype=torch.float64) / D**0.25
    M = A_star + U_star @ U_star.transpose(1, 2)  # task t: y = M_t x
    tasks = [[{"x": x, "labels": x @ M[t].T}
              for x in [torch.randn(64, D, generator=g, dtype=torch.float64) for _ in range(8)]]
             for t in range(T + 2)]
    torch.manual_seed(0)
    base = Conv1D(D, D) if layer == "conv1d" else Projection(D, D, bias=False)
    res = retrain(Regression(base).double(), tasks, method="lora-ml", rank=K, symmetric=True,
                  alpha=K, steps=200, lr=5e-2, target_modules=("layer",), progress=False,
                  device="cpu")
    W = res.model.layer.weight.detach()
    W = W.T if layer == "conv1d" else W  # Conv1D stores (in, out)
    assert type(res.model.layer) is type(base)
    assert ((W - A_star).norm() / A_star.norm()).item() <= 5e-2
    U = res.adapter_state["layer.lora_U"]
    shift = M - A_star
    assert ((U @ U.transpose(1, 2) - shift).norm() / shift.norm()).item() <= 5e-2
