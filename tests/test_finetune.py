"""metanb.finetune: LoRA and head fine-tuning on copies, accuracy and loss evaluation."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from metanb import MetanbError
from metanb.finetune import evaluate_accuracy, evaluate_loss, finetune_head, finetune_lora
from metanb.lora import MultiLoraConfig, adapter_parameters, add_multi_lora
from metanb.models import random_multiple_choice_batches, tiny_roberta

VOCAB = 40


@pytest.fixture
def model():
    model = tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():  # a head of unit scale, as after retraining (init std is 0.02)
        model.classifier.weight.normal_(generator=torch.Generator().manual_seed(0))
    return model


@pytest.fixture
def support():
    return random_multiple_choice_batches(VOCAB, 2, batch_size=6, choices=3, length=6, seed=5)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finetune_lora_trains_a_peft_adapter_on_a_copy(model, support):
    before = snapshot(model)
    tuned = finetune_lora(model, support, rank=2, steps=40, lr=0.1, seed=0)
    assert isinstance(tuned, PeftModel)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    assert evaluate_loss(tuned, support) < 0.5 * evaluate_loss(model, support)
    changed = {k for k, v in tuned.state_dict().items()
               if "lora_" not in k and not torch.equal(v, before[k.replace(
                   "base_model.model.", "").replace(".base_layer", "")])}
    assert not changed  # only the adapter trained
    again = finetune_lora(model, support, rank=2, steps=40, lr=0.1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(tuned.parameters(), again.parameters(),
                                                  strict=True))


def test_finetune_lora_rejects_a_rank_that_does_not_fit(model, support):
    with pytest.raises(MetanbError, match="rank 33 does not fit"):
        finetune_lora(model, support, rank=33)
    with pytest.raises(MetanbError, match="rank must be at least 1"):
        finetune_lora(model, support, rank=0)
    with pytest.raises(MetanbError, match="no nn.Linear module matches"):
        finetune_lora(model, support, target_modules=("q_proj",))


def test_finetune_head_changes_only_the_classifier(model, support):
    before = snapshot(model)
    tuned = finetune_head(model, support, steps=40, lr=5e-2)
    assert type(tuned) is type(model)
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])}
    assert "classifier.weight" in changed <= {"classifier.weight", "classifier.bias"}
    assert evaluate_loss(tuned, support) < evaluate_loss(model, support)
    assert all(p.requires_grad for p in tuned.parameters())  # as the input's
    with pytest.raises(MetanbError, match="no module named 'head'"):
        finetune_head(model, support, head="head")


def test_evaluate_accuracy_is_the_fraction_of_argmax_hits(model, support):
    hits = total = 0
    with torch.no_grad():
        for batch in support:
            hits += (model(**batch).logits.argmax(-1) == batch["labels"]).sum().item()
            total += len(batch["labels"])
    model.train()
    assert evaluate_accuracy(model, support) == hits / total
    assert model.training  # the mode is restored
    with pytest.raises(MetanbError, match="no evaluation examples"):
        evaluate_accuracy(model, [])


def test_evaluation_with_a_task_id_uses_that_tasks_adapter(model, support):
    add_multi_lora(model, MultiLoraConfig(num_tasks=2, rank=2))
    with torch.no_grad():
        adapter_parameters(model)[1][1].normal_()  # task 1's B of the first layer
    assert evaluate_loss(model, support, task=0) != evaluate_loss(model, support, task=1)
    with pytest.raises(MetanbError, match="use_tasks"):
        evaluate_loss(model, support)


def test_finetune_head_gives_back_the_input_models_trainability(model, support):
    model.roberta.embeddings.word_embeddings.weight.requires_grad_(False)
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    tuned = finetune_head(model, support, steps=2, lr=1e-2)
    assert {n: p.requires_grad for n, p in tuned.named_parameters()} == trainable
    assert not trainable["roberta.embeddings.word_embeddings.weight"]
