"""Examples -> multiple-choice tensors for any Hugging Face tokenizer, and batches of them.

Each (history, candidate) pair is one sequence ``history [SEP] candidate`` in the tokenizer's
own pair format, exactly as ``AutoModelForMultipleChoice`` expects (``(N, m, L)`` tensors,
``labels`` of shape ``(N,)``). The recent turns matter most, so the history is cut from the
*left*; the candidate is what is being scored, so it is kept whole (cut only when it alone
does not fit). Every batch is padded to ``max_length`` exactly, so batches of different
persona tasks concatenate into one mixed batch for multi-task LoRA.

``torch`` is imported inside the functions so ``python -m metanb --help`` stays fast.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from metanb.data.tasks import Example
from metanb.errors import MetanbError

if TYPE_CHECKING:
    import torch


def encode_multiple_choice(
    examples: Iterable[Example],
    tokenizer: Any,
    max_length: int = 64,
    num_candidates: int | None = None,
    seed: int = 0,
    include_persona: bool = False,
    persona: Sequence[str] | None = None,
    shuffle_candidates: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenise examples into ``input_ids``/``attention_mask`` of shape ``(N, m, max_length)``.

    ``num_candidates=m`` keeps the true candidate and ``m - 1`` random others. Candidate order
    is shuffled (seeded by ``seed``; always when subsampling, otherwise unless
    ``shuffle_candidates=False``) so the label's position carries no information: the released
    ConvAI2 files put the true reply last. ``include_persona=True`` prepends the ``persona``
    sentences to the history (off by default: the model has to learn the persona). Turns are
    joined with spaces. No ``token_type_ids`` are returned (RoBERTa has none; BERT-style
    models then use segment 0 throughout), so batches from any tokenizer have the same keys.
    """
    import torch

    examples = list(examples)
    if not examples:  # e.g. a zero-shot support set: empty tensors, no batches
        empty = torch.zeros((0, num_candidates or 0, max_length), dtype=torch.long)
        return {"input_ids": empty, "attention_mask": empty.clone(), "labels": empty[:, 0, 0]}
    if include_persona and not persona:
        raise MetanbError("include_persona=True needs the persona sentences: pass persona=...")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise MetanbError("the tokenizer has no pad token; set tokenizer.pad_token first")
    rng = random.Random(seed)
    chosen = [_choose(ex, num_candidates, shuffle_candidates, rng) for ex in examples]
    sizes = {len(cands) for cands, _ in chosen}
    if len(sizes) > 1:
        raise MetanbError(
            f"examples have between {min(sizes)} and {max(sizes)} candidates; pass "
            f"num_candidates=<= {min(sizes)} to give them all the same number"
        )
    m = sizes.pop()
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise MetanbError(f"max_length={max_length} leaves no room next to the special tokens")

    prefix = tuple(persona) if include_persona and persona else ()
    firsts, seconds = [], []
    for ex, (cands, _) in zip(examples, chosen, strict=True):
        context = " ".join((*prefix, *ex.history))
        firsts.extend([context] * m)
        seconds.extend(cands)
    input_ids, attention = _encode_pairs(tokenizer, firsts, seconds, max_length, budget)
    shape = (len(examples), m, max_length)
    return {
        "input_ids": input_ids.view(shape),
        "attention_mask": attention.view(shape),
        "labels": torch.tensor([label for _, label in chosen], dtype=torch.long),
    }


def _choose(
    ex: Example, k: int | None, shuffle: bool, rng: random.Random
) -> tuple[tuple[str, ...], int]:
    """The candidates to encode and the new index of the true one."""
    n = len(ex.candidates)
    if k is None:
        keep = list(range(n))
    else:
        if not 2 <= k <= n:
            raise MetanbError(f"num_candidates={k} must be between 2 and {n} (the candidates)")
        others = [i for i in range(n) if i != ex.label]
        keep = [ex.label, *rng.sample(others, k - 1)]
        shuffle = True
    if shuffle:
        rng.shuffle(keep)
    return tuple(ex.candidates[i] for i in keep), keep.index(ex.label)


def _encode_pairs(
    tokenizer: Any, firsts: list[str], seconds: list[str], max_length: int, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode (history, candidate) pairs: history cut from the left, candidate kept whole.

    A candidate that alone fills the budget is paired with an empty history and cut from the
    right instead. Fast tokenizers take a quick path (each distinct text tokenised once, the
    pair assembled around the tokenizer's own special tokens); others go through ``__call__``.
    """
    backend = _backend(tokenizer)
    template = _pair_template(tokenizer, backend) if backend is not None else None
    if template is not None:
        return _assemble_pairs(tokenizer, backend, template, firsts, seconds, max_length)
    return _call_pairs(tokenizer, firsts, seconds, max_length, budget)


def _backend(tokenizer: Any) -> Any:
    """The Rust ``tokenizers.Tokenizer`` behind a fast tokenizer, or None."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with transformers
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend if isinstance(backend, Tokenizer) else None


def _pair_template(tokenizer: Any, backend: Any) -> tuple[list[int], list[int], list[int]] | None:
    """The special-token ids before the history, between the two, and after the candidate.

    Read off the tokenizer's post-processor applied to a probe pair (by ``sequence_ids``);
    None when the probe does not account for every special token the tokenizer adds.
    """
    with _plain(backend):
        probe = backend.encode(["a"], ["b"], is_pretokenized=True, add_special_tokens=True)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    stage = 0
    for token_id, sequence in zip(probe.ids, probe.sequence_ids, strict=True):
        if sequence is None:
            parts[stage].append(token_id)
        else:
            stage = 1 + sequence
    if sum(map(len, parts)) != tokenizer.num_special_tokens_to_add(pair=True):
        return None
    return parts


@contextmanager
def _plain(backend: Any) -> Iterator[None]:
    """Switch off truncation/padding left on the backend by earlier calls; restore after."""
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        yield
    finally:
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)


def _assemble_pairs(
    tokenizer: Any,
    backend: Any,
    template: tuple[list[int], list[int], list[int]],
    firsts: list[str],
    seconds: list[str],
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    import torch

    before, between, after = template
    budget = max_length - len(before) - len(between) - len(after)
    ids = _token_ids(backend, firsts + seconds)
    input_ids = np.full((len(seconds), max_length), tokenizer.pad_token_id, dtype=np.int64)
    attention = np.zeros((len(seconds), max_length), dtype=np.int64)
    left = tokenizer.padding_side == "left"
    for row, (first, second) in enumerate(zip(firsts, seconds, strict=True)):
        cand = ids[second]
        if len(cand) >= budget:
            history, cand = [], cand[:budget]
        else:
            history = ids[first][len(cand) - budget :]  # the last tokens that fit
        tokens = before + history + between + cand + after
        span = slice(max_length - len(tokens), None) if left else slice(0, len(tokens))
        input_ids[row, span] = tokens
        attention[row, span] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(attention)


def _token_ids(backend: Any, texts: list[str]) -> dict[str, list[int]]:
    unique = list(dict.fromkeys(texts))
    with _plain(backend):
        encodings = backend.encode_batch(unique, add_special_tokens=False)
    return {text: enc.ids for text, enc in zip(unique, encodings, strict=True)}


def _call_pairs(
    tokenizer: Any, firsts: list[str], seconds: list[str], max_length: int, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same encoding through the tokenizer's ``__call__`` (any tokenizer, slower)."""
    import torch

    unique = list(dict.fromkeys(seconds))
    tokens = tokenizer(unique, add_special_tokens=False)["input_ids"]
    lengths = dict(zip(unique, map(len, tokens), strict=True))
    alone = [i for i, cand in enumerate(seconds) if lengths[cand] >= budget]
    alone_set = set(alone)
    paired = [i for i in range(len(seconds)) if i not in alone_set]
    input_ids = torch.empty((len(seconds), max_length), dtype=torch.long)
    attention = torch.empty((len(seconds), max_length), dtype=torch.long)
    for rows, first, strategy, side in (
        (paired, [firsts[i] for i in paired], "only_first", "left"),
        (alone, [""] * len(alone), "only_second", "right"),
    ):
        if not rows:
            continue
        enc = _call(tokenizer, first, [seconds[i] for i in rows], max_length, strategy, side)
        index = torch.tensor(rows, dtype=torch.long)
        input_ids[index] = enc["input_ids"].long()
        attention[index] = enc["attention_mask"].long()
    return input_ids, attention


def _call(
    tokenizer: Any,
    firsts: list[str],
    seconds: list[str],
    max_length: int,
    strategy: str,
    side: str,
) -> Any:
    """One batched tokenizer call with a given truncation side (restored afterwards)."""
    saved = tokenizer.truncation_side
    tokenizer.truncation_side = side
    try:
        return tokenizer(
            firsts,
            seconds,
            truncation=strategy,
            max_length=max_length,
            padding="max_length",
            return_token_type_ids=False,
            return_attention_mask=True,
            return_tensors="pt",
        )
    finally:
        tokenizer.truncation_side = saved


def make_batches(
    encoded: dict[str, torch.Tensor], batch_size: int, shuffle: bool = True, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Split encoded tensors into batches along the first dimension (seeded shuffle).

    The last batch may be smaller. Each batch is a dict that ``model(**batch)`` accepts.
    """
    import torch

    if batch_size < 1:
        raise MetanbError(f"batch_size={batch_size} must be at least 1")
    if not encoded:
        raise MetanbError("nothing to batch: the encoded dict is empty")
    sizes = {name: tensor.shape[0] for name, tensor in encoded.items()}
    if len(set(sizes.values())) != 1:
        raise MetanbError(f"encoded tensors disagree on the number of examples: {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        return []
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.arange(n)
    return [
        {name: tensor[index] for name, tensor in encoded.items()}
        for index in order.split(batch_size)
    ]
