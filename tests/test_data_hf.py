"""The Hugging Face form of Persona-Chat: an in-memory datasets.Dataset, JSON files, the Hub."""

from __future__ import annotations

import json
import os

import datasets
import pytest

from metanb import MetanbError
from metanb.data import load_hf_persona_chat, read_hf_json

PERSONA = ["i like tea .", "i have a cat ."]


def record(conv, idx, history, candidates, personality=PERSONA):
    return {
        "personality": list(personality),
        "history": list(history),
        "candidates": list(candidates),
        "utterance_idx": idx,
        "conv_id": conv,
    }


RECORDS = [
    record(7, 1, ["hi", "hello", "tea?"], ["no", "coffee", "yes , tea"]),
    record(7, 0, ["hi"], ["bye", "hello"]),
    record(3, 0, ["hey"], ["x", "y", "z"], personality=["i am tall ."]),
    # a repeat of conv 7 turn 0 with the persona permuted: the last record wins
    record(7, 0, ["hi"], ["nope", "hello"], personality=PERSONA[::-1]),
]


def test_dataset_groups_by_conversation_orders_turns_and_takes_the_last_duplicate():
    dataset = datasets.Dataset.from_list(RECORDS)
    dialogues = load_hf_persona_chat(dataset, split="train")
    assert [d.episode for d in dialogues] == [7, 3]  # conversations in order of appearance
    conv7, conv3 = dialogues
    assert [ex.history for ex in conv7.examples] == [("hi",), ("hi", "hello", "tea?")]
    first = conv7.examples[0]
    assert first.candidates == ("nope", "hello")  # from the later duplicate
    assert first.response == "hello"  # the true response is the last candidate
    assert conv7.examples[1].label == 2
    assert conv3.persona == ("i am tall .",)
    assert conv3.examples[0].response == "z"
    assert dialogues.skipped == 0


def test_dataset_dict_picks_the_split_and_names_the_missing_one():
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_list(RECORDS[:2]),
        validation=datasets.Dataset.from_list(RECORDS[2:3]),
    )
    (valid,) = load_hf_persona_chat(splits, split="validation")
    assert valid.persona == ("i am tall .",)
    with pytest.raises(MetanbError, match="no split 'test'.*'train', 'validation'"):
        load_hf_persona_chat(splits, split="test")


def test_bad_records_are_named_or_skipped_and_counted():
    bad = [RECORDS[2], {"personality": [], "history": ["a"]}, record(9, 0, ["a"], [])]
    with pytest.raises(MetanbError, match=r"record 1: missing \['candidates', 'utterance_idx'"):
        load_hf_persona_chat(bad)
    dialogues = load_hf_persona_chat(bad, skip_bad=True)
    assert dialogues.skipped == 2
    assert "record 2: expected a non-empty candidate list" in dialogues.problems[1]
    assert [d.episode for d in dialogues] == [3]


def test_a_string_where_a_list_belongs_is_refused():
    with pytest.raises(MetanbError, match="'history' to be a list of strings"):
        load_hf_persona_chat([{**record(1, 0, [], ["a"]), "history": "hi"}])


def test_hub_failure_says_to_use_parlai_files_or_the_generator(monkeypatch):
    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MetanbError) as info:
        load_hf_persona_chat("bavard/personachat_truecased", split="train")
    message = str(info.value)
    assert "bavard/personachat_truecased" in message and "OfflineModeIsEnabled" in message
    assert "ParlAI" in message and "data generate" in message


@pytest.mark.skipif(os.environ.get("HF_DATASETS_OFFLINE") != "1", reason="needs offline mode")
def test_real_hub_request_offline_is_a_clear_error():
    with pytest.raises(MetanbError, match="could not load.*ParlAI"):
        load_hf_persona_chat("metanb-no-such/persona-chat", split="train")


def test_json_list_and_jsonl_files_give_the_same_dialogues(tmp_path):
    as_list = tmp_path / "records.json"
    as_list.write_text(json.dumps(RECORDS))
    as_lines = tmp_path / "records.jsonl"
    as_lines.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    from_list, from_lines = read_hf_json(as_list), read_hf_json(as_lines)
    assert [d.examples for d in from_list] == [d.examples for d in from_lines]
    assert len(from_list) == 2


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(MetanbError, match=r"broken.jsonl:2: expected JSON"):
        read_hf_json(path)
    path.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n\xff\n")
    with pytest.raises(MetanbError, match=r"broken.jsonl:2: expected UTF-8"):
        read_hf_json(path)
    with pytest.raises(MetanbError, match="no such file"):
        read_hf_json(tmp_path / "absent.json")


def dialogue_record(personality, turns):
    """A record of the parquet copy on the Hub (AlekseyKorshuk/persona-chat): one dialogue."""
    return {
        "personality": list(personality),
        "utterances": [{"history": list(h), "candidates": list(c)} for h, c in turns],
    }


DIALOGUE_RECORDS = [
    dialogue_record(
        PERSONA,
        [
            (["hi"], ["bye", "no", "hello"]),
            (["hi", "hello", "tea?"], ["yes , tea", "coffee", "no", "yes , tea"]),
        ],
    ),
    dialogue_record(["i am tall ."], [(["hey"], ["x", "y", "z"])]),
]


def test_hub_parquet_dialogue_records_map_to_dialogues_offline(tmp_path):
    """Built locally as datasets stores the parquet copy (list of structs), no network."""
    from metanb.data import HUB_DATASET

    assert HUB_DATASET == "AlekseyKorshuk/persona-chat"
    dataset = datasets.Dataset.from_list(DIALOGUE_RECORDS)
    dataset.to_parquet(tmp_path / "train.parquet")
    local = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "train.parquet"), cache_dir=str(tmp_path / "cache")
    )
    for source in (dataset, local):
        first, second = load_hf_persona_chat(source, split="train")
        assert first.persona == tuple(PERSONA) and second.persona == ("i am tall .",)
        assert [ex.history for ex in first.examples] == [("hi",), ("hi", "hello", "tea?")]
        assert first.examples[0].response == "hello" and first.examples[0].label == 2
        # the gold is the last candidate; its earlier copy is not kept as a distractor
        assert first.examples[1].candidates == ("coffee", "no", "yes , tea")
        assert first.examples[1].label == 2
        assert second.examples[0].response == "z"


def test_bad_dialogue_records_are_named_or_skipped():
    bad = [DIALOGUE_RECORDS[1], {"personality": ["a"], "utterances": [{"history": ["x"]}]}]
    with pytest.raises(MetanbError, match=r"record 1: utterance 0: expected a mapping with"):
        load_hf_persona_chat(bad)
    dialogues = load_hf_persona_chat(bad, skip_bad=True)
    assert dialogues.skipped == 1 and len(dialogues) == 1
    with pytest.raises(MetanbError, match="record 0: expected at least one utterance"):
        load_hf_persona_chat([{"personality": ["a"], "utterances": []}])
