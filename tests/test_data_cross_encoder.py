"""Cross-encoder pairs in the paper's format, batches whose model loss is its NLL, hits@1."""

from __future__ import annotations

import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

from metanb.data import Example, encode_cross_encoder, hits_at_1, make_cross_encoder_batches
from metanb.data.cross_encoder import special_template
from metanb.errors import MetanbError
from metanb.models import build_word_tokenizer

WORDS = "hi hello how are you i like tea coffee cats dogs yes no maybe".split()


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([" ".join(WORDS)])


def tokens(tok, ids) -> list[str]:
    return [t for t in tok.convert_ids_to_tokens(ids.tolist()) if t != "<pad>"]


EXAMPLES = [
    Example(("hi", " how are you"), ("yes", "i like tea", "no"), 1),
    Example(("hello",), ("cats", "dogs", "maybe coffee"), 2),
]


def test_pairs_are_context_then_candidate_each_encoded_alone(tok) -> None:
    enc = encode_cross_encoder(EXAMPLES, tok, group_size=3)
    # the longest pair: "hi how are you" (4) + "i like tea" (3) + 4 special tokens
    assert enc["input_ids"].shape == enc["attention_mask"].shape == (2, 3, 11)
    assert enc["attention_mask"].sum(-1).tolist() == [[9, 11, 9], [6, 6, 7]]  # nothing cut
    assert torch.equal(enc["labels"], torch.tensor([[0, 1, 0], [0, 0, 1]]))
    # <s>context</s><s>candidate</s>, the turns concatenated as they are
    assert tokens(tok, enc["input_ids"][0, 1]) == [
        "<s>", "hi", "how", "are", "you", "</s>", "<s>", "i", "like", "tea", "</s>"]
    assert tokens(tok, enc["input_ids"][1, 0]) == ["<s>", "hello", "</s>", "<s>", "cats", "</s>"]
    # right padding, mask = non-pad
    assert torch.equal(enc["attention_mask"].bool(), enc["input_ids"] != tok.pad_token_id)
    assert enc["attention_mask"][1, 0].tolist() == [1] * 6 + [0] * 5


def test_separator_pair_and_max_length(tok) -> None:
    ex = [Example(("hi", "how are you"), ("yes", "no"), 0)]
    glued = encode_cross_encoder(ex, tok, group_size=2)
    assert tokens(tok, glued["input_ids"][0, 0])[:3] == ["<s>", "<unk>", "are"]  # "hihow"
    spaced = encode_cross_encoder(ex, tok, group_size=2, separator=" ")
    assert tokens(tok, spaced["input_ids"][0, 0]) == [
        "<s>", "hi", "how", "are", "you", "</s>", "<s>", "yes", "</s>"]
    pair = encode_cross_encoder(ex, tok, group_size=2, separator=" ", pair=True)
    assert tokens(tok, pair["input_ids"][0, 1]) == [
        "<s>", "hi", "how", "are", "you", "</s>", "</s>", "no", "</s>"]
    cut = encode_cross_encoder(ex, tok, group_size=2, separator=" ", max_length=7)
    assert cut["input_ids"].shape[-1] == 7  # the context loses its oldest tokens
    assert tokens(tok, cut["input_ids"][0, 0]) == [
        "<s>", "are", "you", "</s>", "<s>", "yes", "</s>"]
    with pytest.raises(MetanbError, match="max_length=4 leaves no room"):
        encode_cross_encoder(ex, tok, group_size=2, max_length=4)


def test_templates_read_off_the_tokenizer(tok) -> None:
    assert special_template(tok, pair=False) == ([0], [], [2])
    assert special_template(tok, pair=True) == ([0], [2, 2], [2])


def test_short_groups_are_filled_with_distractors_long_ones_refused(tok) -> None:
    enc = encode_cross_encoder([Example(("hi",), ("yes", "no"), 1)], tok, group_size=5)
    cands = [tokens(tok, row)[-2] for row in enc["input_ids"][0]]
    assert cands == ["yes", "no", "yes", "yes", "yes"]
    assert enc["labels"][0].tolist() == [0, 1, 0, 0, 0]
    with pytest.raises(MetanbError, match="has 3 candidates, more than group_size=2"):
        encode_cross_encoder(EXAMPLES[:1], tok, group_size=2)
    with pytest.raises(MetanbError, match="only its true reply"):
        encode_cross_encoder([Example(("hi",), ("yes",), 0)], tok, group_size=2)


def test_batches_flatten_trim_and_give_the_papers_loss(tok) -> None:
    examples = [Example(("hi",) * (k % 4 + 1), ("yes", "no", "tea", "cats"), k % 4)
                for k in range(10)]
    enc = encode_cross_encoder(examples, tok, group_size=4, separator=" ")
    batches = make_cross_encoder_batches(enc, batch_size=4, shuffle=True, seed=1)
    assert [b["labels"].shape[0] for b in batches] == [16, 16, 8]
    assert sum(int(b["labels"].sum()) for b in batches) == 10  # one gold per example
    for b in batches:
        assert b["input_ids"].shape == b["attention_mask"].shape
        assert b["attention_mask"][:, -1].any()  # cut to the batch's own longest pair
        assert (b["labels"].view(-1, 4).sum(1) == 1).all()  # whole groups only
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=2, pad_token_id=1,
    )
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config).eval()
    batch = batches[0]
    out = model(**batch)
    # the paper: NLLLoss(LogSoftmax(logits), targets) over all pairs of the batch
    expected = torch.nn.NLLLoss()(torch.log_softmax(out.logits, dim=1), batch["labels"])
    assert torch.allclose(out.loss, expected)
    # padding is invisible: the trimmed batch scores each pair as the untrimmed one does
    full = {k: v.flatten(0, 1) for k, v in enc.items() if k != "labels"}
    ref = model(**full).logits.view(10, 4, 2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))[:4]
    assert torch.allclose(out.logits.view(4, 4, 2), ref[order], atol=1e-5)


def test_hits_at_1_is_argmax_of_the_positive_logit() -> None:
    labels = torch.tensor([0, 1, 0, 0, 0, 1, 1, 0, 0])  # golds at 1, 2, 0
    positive = torch.tensor([0.1, 0.9, 0.3, 2.0, 1.0, 1.5, 0.2, 0.2, 0.1])
    logits = torch.stack([torch.zeros(9), positive], dim=1)
    assert hits_at_1(logits, labels, 3).tolist() == [1.0, 0.0, 1.0]
    assert hits_at_1(positive, labels, 3).mean().item() == pytest.approx(2 / 3)
    # ties go to the first candidate, as torch.argmax and the paper's code do
    tie = torch.tensor([0.5, 0.5, 0.0])
    assert hits_at_1(tie, torch.tensor([0, 1, 0]), 3).tolist() == [0.0]
    with pytest.raises(MetanbError, match="do not make whole groups of 4"):
        hits_at_1(positive, labels, 4)
