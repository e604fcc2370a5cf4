"""Persona-Chat in the Hugging Face ``datasets`` form (records with candidates).

Each record is one example: ``personality`` (the persona sentences), ``history`` (the turns so
far, ending with the partner's), ``candidates`` (the true response last), ``utterance_idx``
(its position in the conversation) and ``conv_id``. Some copies repeat a record (e.g. with the
persona sentences permuted): only the last record per ``(conv_id, utterance_idx)`` is used.
Records are grouped into one :class:`Dialogue` per ``conv_id``, ordered by ``utterance_idx``.

The Hub copy the experiment uses, :data:`HUB_DATASET` (``AlekseyKorshuk/persona-chat``,
parquet), has one record per *dialogue* instead: ``personality`` and ``utterances``, a list of
``{"history": [...], "candidates": [...]}`` (true reply last); such records are recognised by
their ``utterances`` field and become one :class:`Dialogue` each, in order. (It is ConvAI2-sized:
every conversation from both sides. ``bavard/personachat_truecased`` needs a loading script,
which ``datasets`` >= 4 refuses.)

The same records can come from the Hub (``load_hf_persona_chat("name")``), from a
``datasets.Dataset`` in memory, or from a JSON/JSONL file (:func:`read_hf_json`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from metanb.data.tasks import Dialogue, Dialogues, Example, true_index
from metanb.errors import MetanbError

FIELDS = ("personality", "history", "candidates", "utterance_idx", "conv_id")
DIALOGUE_FIELDS = ("personality", "utterances")
HUB_DATASET = "AlekseyKorshuk/persona-chat"
OFFLINE_HINT = (
    "offline, read ConvAI2's ParlAI text files (read_parlai, `--format parlai`) or generate "
    "data with `python -m metanb data generate`"
)


def load_hf_persona_chat(
    name_or_dataset: Any, split: str = "train", skip_bad: bool = False
) -> Dialogues:
    """Dialogues from a Hub dataset name, a ``datasets.Dataset``/``DatasetDict``, or records.

    Only a name touches the network (through ``datasets.load_dataset``); when that fails, e.g.
    offline, a :class:`MetanbError` says to use ParlAI files or the generator instead.
    """
    if isinstance(name_or_dataset, (str, os.PathLike)):
        name = os.fspath(name_or_dataset)
        dataset, source = _load_from_hub(name, split), f"{name}[{split}]"
    else:
        dataset, source = name_or_dataset, f"dataset[{split}]"
    if isinstance(dataset, Mapping):  # a DatasetDict (or a plain {split: records})
        if split not in dataset:
            raise MetanbError(f"no split {split!r} in the dataset; it has {sorted(dataset)}")
        dataset = dataset[split]
    return dialogues_from_records(_rows(dataset), source=source, skip_bad=skip_bad)


def _load_from_hub(name: str, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise MetanbError(
            f"loading {name!r} needs the `datasets` package (pip install 'metanb[hub]'); "
            + OFFLINE_HINT
        ) from None
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as exc:  # the Hub's failures are many (offline, missing, gated...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MetanbError(
            f"could not load the Hugging Face dataset {name!r} (split {split!r}): {reason}; "
            + OFFLINE_HINT
        ) from exc


def _rows(dataset: Any) -> Iterator[Mapping[str, Any]]:
    """Records one by one; a ``datasets.Dataset`` is read in column batches (much faster)."""
    if hasattr(dataset, "column_names") and hasattr(dataset, "iter"):
        for batch in dataset.iter(batch_size=1024):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns), strict=True):
                yield dict(zip(columns, values, strict=True))
    else:
        yield from dataset


def dialogues_from_records(
    records: Iterable[Mapping[str, Any]], source: str = "records", skip_bad: bool = False
) -> Dialogues:
    """Group Persona-Chat records into dialogues (last record wins per conversation turn).

    A malformed record raises a :class:`MetanbError` naming it; with ``skip_bad=True`` it is
    skipped and counted in the result's ``.skipped``.
    """
    result = Dialogues()
    latest: dict[Any, dict[Any, tuple[tuple[str, ...], Example]]] = {}
    dialogue_records: list[Dialogue] = []
    for index, record in enumerate(records):
        try:
            if isinstance(record, Mapping) and "utterances" in record:
                dialogue_records.append(_parse_dialogue_record(record, source, index))
                continue
            conv_id, utterance, persona, example = _parse_record(record)
        except MetanbError as exc:
            message = f"{source}: record {index}: {exc}"
            if not skip_bad:
                raise MetanbError(message + " (pass skip_bad=True / --skip-bad to skip)") from None
            result.note_skipped(message)
            continue
        latest.setdefault(conv_id, {})[utterance] = (persona, example)
    result.extend(dialogue_records)
    for number, (conv_id, turns) in enumerate(latest.items()):
        ordered = [turns[u] for u in sorted(turns)]
        result.append(
            Dialogue(
                persona=ordered[0][0],
                examples=[example for _, example in ordered],
                source=source,
                episode=conv_id if isinstance(conv_id, int) else number,
            )
        )
    return result


def _parse_record(record: Any) -> tuple[Any, Any, tuple[str, ...], Example]:
    if not isinstance(record, Mapping):
        raise MetanbError(f"expected a mapping with keys {FIELDS}, got {type(record).__name__}")
    missing = [key for key in FIELDS if key not in record]
    if missing:
        raise MetanbError(f"missing {missing}; expected Persona-Chat records with keys {FIELDS}")
    persona = _texts(record, "personality")
    history = _texts(record, "history")
    candidates = list(_texts(record, "candidates"))
    if not candidates:
        raise MetanbError("expected a non-empty candidate list, got []")
    label = true_index(candidates, candidates[-1])
    assert label is not None  # the last candidate is always among the candidates
    return (
        record["conv_id"],
        record["utterance_idx"],
        persona,
        Example(history, tuple(candidates), label),
    )


def _parse_dialogue_record(record: Mapping[str, Any], source: str, index: int) -> Dialogue:
    """One dialogue from a ``{personality, utterances: [{history, candidates}]}`` record."""
    missing = [key for key in DIALOGUE_FIELDS if key not in record]
    if missing:
        raise MetanbError(f"missing {missing}; expected dialogue records with {DIALOGUE_FIELDS}")
    persona = _texts(record, "personality")
    turns = record["utterances"]
    if isinstance(turns, (str, bytes, Mapping)) or not hasattr(turns, "__iter__"):
        raise MetanbError(f"expected 'utterances' to be a list of turns, got {turns!r:.60}")
    examples = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "history" not in turn or "candidates" not in turn:
            raise MetanbError(f"utterance {j}: expected a mapping with 'history' and 'candidates'")
        candidates = list(_texts(turn, "candidates"))
        if not candidates:
            raise MetanbError(f"utterance {j}: expected a non-empty candidate list, got []")
        label = true_index(candidates, candidates[-1])
        assert label is not None  # the last candidate is always among the candidates
        examples.append(Example(_texts(turn, "history"), tuple(candidates), label))
    if not examples:
        raise MetanbError("expected at least one utterance, got none")
    return Dialogue(persona=persona, examples=examples, source=source, episode=index)


def _texts(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = record[key]
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise MetanbError(f"expected {key!r} to be a list of strings, got {value!r:.60}")
    return tuple(value)


def read_hf_json(path: str | os.PathLike[str], skip_bad: bool = False) -> Dialogues:
    """Dialogues from a file of Hugging Face-style records: a JSON list, or JSONL (one a line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetanbError(
            f"no such file: {path}; give a JSON/JSONL file of Persona-Chat records "
            "or a ParlAI text file with --format parlai"
        ) from None
    except OSError as exc:
        raise MetanbError(f"cannot read {path}: {exc.strerror}") from None
    if raw.lstrip()[:1] == b"[":
        records = _json_value(path, raw, 1)
        if not isinstance(records, list):
            raise MetanbError(f"{path}: expected a JSON list of records")
    else:
        records = [
            _json_value(path, line, lineno)
            for lineno, line in enumerate(raw.splitlines(), 1)
            if line.strip()
        ]
    return dialogues_from_records(records, source=str(path), skip_bad=skip_bad)


def _json_value(path: Path, raw: bytes, lineno: int) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = lineno + raw[: exc.start].count(b"\n")
        raise MetanbError(
            f"{path}:{line}: expected UTF-8 text; re-save the file as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        line = lineno + exc.lineno - 1
        raise MetanbError(
            f"{path}:{line}: expected JSON (a list of records, or one record a line): {exc.msg}"
        ) from None
