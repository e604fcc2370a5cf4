"""metanb.lora.export: the base as a plain HF checkpoint, task adapters in PEFT's format."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForMultipleChoice, RobertaForMultipleChoice

from metanb import MetanbError
from metanb.lora import (
    MultiLoraConfig,
    adapter_parameters,
    add_multi_lora,
    export_adapter,
    export_base,
    multi_lora_layers,
    use_tasks,
)
from metanb.models import random_multiple_choice_batches, tiny_roberta

VOCAB = 40


def adapted_model(symmetric: bool = False):
    """A tiny RoBERTa with 3 task adapters whose base and adapters both moved ("trained")."""
    model = tiny_roberta(VOCAB, seed=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    names = list(model.state_dict())
    add_multi_lora(model, MultiLoraConfig(num_tasks=3, rank=4, alpha=8, symmetric=symmetric))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for p in adapter_parameters(model):
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval(), names


@pytest.fixture
def batch():
    return random_multiple_choice_batches(VOCAB, 1, batch_size=4, choices=3, length=6)[0]


def test_exported_base_is_a_plain_hf_checkpoint_with_the_base_names(tmp_path):
    model, names = adapted_model()
    export_base(model, tmp_path / "base")
    loaded = AutoModelForMultipleChoice.from_pretrained(tmp_path / "base")
    assert type(loaded) is RobertaForMultipleChoice
    assert list(loaded.state_dict()) == names
    saved = load_file(tmp_path / "base" / "model.safetensors")
    assert not [k for k in saved if "lora" in k or "base_layer" in k]
    query = multi_lora_layers(model)["roberta.encoder.layer.1.attention.self.query"]
    assert torch.equal(loaded.roberta.encoder.layer[1].attention.self.query.weight,
                       query.base_layer.weight)
    assert len(multi_lora_layers(model)) == 4  # the adapters are back after the export


def test_peft_attaches_a_new_lora_to_the_exported_base_and_trains_it(tmp_path, batch):
    model, _ = adapted_model()
    export_base(model, tmp_path / "base")
    base = AutoModelForMultipleChoice.from_pretrained(tmp_path / "base")
    peft_model = get_peft_model(
        base, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert len(trainable) == 8 and all(p.numel() == 2 * 64 for p in trainable)  # 2x64, 64x2
    optimizer = torch.optim.AdamW(trainable, lr=3e-2)
    peft_model.train()
    losses = []
    for _ in range(25):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("symmetric", [False, True])
def test_exported_task_adapter_reloads_in_peft_and_matches(tmp_path, batch, symmetric):
    model, _ = adapted_model(symmetric)
    export_base(model, tmp_path / "base")
    for task in range(3):
        path = export_adapter(model, task, tmp_path / f"task{task}")
        config = json.loads((path / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], config["peft_type"]) == (4, 8, "LORA")
        base = AutoModelForMultipleChoice.from_pretrained(tmp_path / "base")
        peft_model = PeftModel.from_pretrained(base, path).eval()
        with torch.no_grad(), use_tasks(model, torch.full((4,), task)):
            expected = model(**batch).logits
        with torch.no_grad():
            got = peft_model(**batch).logits
        assert (got - expected).abs().max().item() <= 1e-5


def test_exporting_a_missing_task_is_a_clear_error(tmp_path):
    model, _ = adapted_model()
    with pytest.raises(MetanbError, match="task 3 is out of range"):
        export_adapter(model, 3, tmp_path)
    with pytest.raises(MetanbError, match="add_multi_lora"):
        export_adapter(copy.deepcopy(tiny_roberta(VOCAB)), 0, tmp_path)


def test_exporting_the_base_onto_a_file_is_a_clear_error(tmp_path):
    model, _ = adapted_model()
    (tmp_path / "base").write_text("not a folder")
    with pytest.raises(MetanbError, match="it is a file, not a folder"):
        export_base(model, tmp_path / "base")
