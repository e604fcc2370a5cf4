"""Examples -> cross-encoder batches, the paper's format for ``RobertaForSequenceClassification``.

The paper (``convai/conv_utils.py``) scores each (context, candidate) pair on its own with a
2-label sequence classifier: the pair is the context encoded alone followed by the candidate
encoded alone, ``<s>context</s><s>candidate</s>`` for RoBERTa, right-padded, not truncated.
The context is every earlier utterance of the dialogue concatenated *without a separator*
(``separator=""``, as the paper; the persona is never in the input). Each example gives
``group_size`` = 20 pairs, label 1 for the true reply and 0 for the others; the loss is the
2-class NLL averaged over all pairs of the batch, which is exactly ``model(**batch).loss`` of a
2-label ``*ForSequenceClassification`` on a batch from :func:`make_cross_encoder_batches`.
Hits@1 (:func:`hits_at_1`) is whether the true reply has the largest positive-class logit.

``pair=True`` encodes with the tokenizer's own pair template instead
(``<s>context</s></s>candidate</s>`` for RoBERTa): not the paper's format, offered to compare.

An example with fewer than ``group_size`` candidates (readers drop extra copies of the true
reply from the candidates) is filled up by repeating its distractors, which changes no hits@1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from metanb.data.multiple_choice import make_batches
from metanb.data.tasks import Example
from metanb.errors import MetanbError

if TYPE_CHECKING:
    import torch

PAPER_GROUP_SIZE = 20


def _group(ex: Example, group_size: int) -> tuple[list[str], int]:
    """The example's candidates, filled up to ``group_size`` with repeated distractors."""
    cands = list(ex.candidates)
    if len(cands) > group_size:
        raise MetanbError(
            f"an example has {len(cands)} candidates, more than group_size={group_size}; "
            "use group_size >= the number of candidates"
        )
    distractors = [c for i, c in enumerate(cands) if i != ex.label]
    if len(cands) < group_size and not distractors:
        raise MetanbError("an example has only its true reply as candidate: nothing to rank")
    k = 0
    while len(cands) < group_size:
        cands.append(distractors[k % len(distractors)])
        k += 1
    return cands, ex.label


def encode_cross_encoder(
    examples: Iterable[Example],
    tokenizer: Any,
    group_size: int = PAPER_GROUP_SIZE,
    separator: str = "",
    max_length: int | None = None,
    pair: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenise examples into ``input_ids``/``attention_mask`` ``(N, group_size, L)``, ``labels``
    ``(N, group_size)`` (1 = true reply); L is the longest pair (padded on the right).

    ``max_length`` (default: none, as the paper) cuts the context from the left, keeping its
    special tokens, so that no pair is longer; a candidate alone too long is cut at its end.
    """
    import numpy as np
    import torch

    examples = list(examples)
    if group_size < 2:
        raise MetanbError(f"group_size={group_size} must be at least 2")
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise MetanbError("the tokenizer has no pad token; set tokenizer.pad_token first")
    groups = [_group(ex, group_size) for ex in examples]
    contexts = [separator.join(ex.history) for ex in examples]
    ids = _body_ids(tokenizer, contexts + [c for cands, _ in groups for c in cands])
    template = special_template(tokenizer, pair)
    special = sum(map(len, template)) * (1 if pair else 2)
    rows: list[list[int]] = []
    for context, (cands, _) in zip(contexts, groups, strict=True):
        for cand in cands:
            rows.append(_pair_ids(template, ids[context], ids[cand], pair, special, max_length))
    length = max((len(r) for r in rows), default=0)
    ids_np = np.full((len(rows), length), pad, dtype=np.int64)
    mask_np = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids_np[i, : len(row)] = row
        mask_np[i, : len(row)] = 1
    input_ids, attention = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
    labels = torch.zeros((len(examples), group_size), dtype=torch.long)
    for i, (_, label) in enumerate(groups):
        labels[i, label] = 1
    shape = (len(examples), group_size, length)
    return {
        "input_ids": input_ids.view(shape),
        "attention_mask": attention.view(shape),
        "labels": labels,
    }


def _body_ids(tokenizer: Any, texts: list[str]) -> dict[str, list[int]]:
    """Each distinct text tokenised once, without special tokens."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    encoded = tokenizer(unique, add_special_tokens=False)["input_ids"]
    return dict(zip(unique, encoded, strict=True))


def _pair_ids(
    template: tuple[list[int], list[int], list[int]],
    context: list[int],
    cand: list[int],
    pair: bool,
    special: int,
    max_length: int | None,
) -> list[int]:
    if max_length is not None:
        budget = max_length - special
        if budget < 1:
            raise MetanbError(f"max_length={max_length} leaves no room next to special tokens")
        if len(cand) >= budget:
            context, cand = [], cand[:budget]
        elif len(context) + len(cand) > budget:
            context = context[len(context) + len(cand) - budget :]
    if pair:
        before, between, after = template
        return [*before, *context, *between, *cand, *after]
    before, _, after = template
    return [*before, *context, *after, *before, *cand, *after]


def special_template(tokenizer: Any, pair: bool) -> tuple[list[int], list[int], list[int]]:
    """The special-token ids the tokenizer puts before, between and after (pair) or around
    (single: ``between`` empty) its texts, read off a probe encoding (any tokenizer)."""
    probe_a, probe_b = "a", "b"
    body_a = len(tokenizer(probe_a, add_special_tokens=False)["input_ids"])
    enc = tokenizer(probe_a, probe_b if pair else None, return_special_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["special_tokens_mask"])
    before: list[int] = []
    between: list[int] = []
    after: list[int] = []
    seen = 0  # text tokens so far
    for token, special in zip(ids, mask, strict=True):
        if not special:
            seen += 1
        elif seen == 0:
            before.append(token)
        elif pair and seen <= body_a:
            between.append(token)
        else:
            after.append(token)
    return before, between, after


def make_cross_encoder_batches(
    encoded: dict[str, torch.Tensor], batch_size: int, shuffle: bool = True, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Batches of ``batch_size`` examples, flattened to ``(batch_size * group_size, L)`` pairs.

    Each batch is cut to its own longest pair (the padding is on the right), so
    ``model(**batch)`` of a 2-label sequence classifier gives the paper's loss; the
    ``group_size`` of a batch is ``batch["labels"].numel() // n_examples``, and
    :func:`hits_at_1` regroups the logits.
    """
    if "labels" in encoded and encoded["labels"].dim() != 2:
        raise MetanbError("expected cross-encoder tensors from encode_cross_encoder")
    batches = []
    for batch in make_batches(encoded, batch_size, shuffle=shuffle, seed=seed):
        mask = batch["attention_mask"].flatten(0, 1)
        length = int(mask.sum(dim=1).max()) if mask.numel() else 0
        batches.append(
            {
                "input_ids": batch["input_ids"].flatten(0, 1)[:, :length],
                "attention_mask": mask[:, :length],
                "labels": batch["labels"].flatten(),
            }
        )
    return batches


def hits_at_1(logits: torch.Tensor, labels: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per example, 1.0 where the true reply has the largest positive logit (first on ties).

    ``logits`` is ``(N * group_size, 2)`` (the model's output on a flattened batch) or already
    ``(N * group_size,)`` positive-class scores; ``labels`` the matching 0/1 pair labels.
    """
    scores = logits[..., 1] if logits.dim() == 2 else logits
    if scores.numel() != labels.numel() or scores.numel() % group_size:
        raise MetanbError(
            f"{scores.numel()} scores and {labels.numel()} labels do not make whole groups "
            f"of {group_size}"
        )
    scores = scores.detach().reshape(-1, group_size)
    truth = labels.reshape(-1, group_size).argmax(dim=1)
    return (scores.argmax(dim=1) == truth).float()
