"""Persona-Chat self_original files, PAML clusters cut as the paper does, the data folder."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from metanb.cli import main
from metanb.data import (
    cluster_dialogues,
    cluster_tasks,
    download_persona_chat,
    load_persona_chat_folder,
    new_tasks,
    read_parlai,
    retraining_tasks,
    split_support_query,
)
from metanb.data import persona_chat as pc
from metanb.errors import MetanbError

P1 = ["i like cats.", "i live in ohio."]
P1_PERMUTED = P1[::-1]
P2 = ["i am tall.", "i like dogs."]
P3 = ["i hate mondays."]
P4 = ["i am not in the map."]
P5 = ["i like jazz."]
P6 = ["i swim."]
P7 = ["my job: i run."]  # a colon: PAML's key keeps only "my job"[:-1]
# (persona, turns) in file order; d-index = position
EPISODES = [
    (P1, 2), (P2, 3), (P1, 2), (P4, 2), (P2, 3), (P6, 4), (P1, 2),
    (P3, 2), (P3, 2), (P5, 2), (P7, 1), (P6, 4), (P2, 3), (P1_PERMUTED, 2),
]  # fmt: skip
PERSONA_MAP = {
    np.int32(3): [["i like cats", "i live in ohio"], ["i am tall", "i like dogs"]],
    np.int32(41): [["i am tall", "i like dogs"]],  # P2 is in 3 and 41: the last one wins
    np.int32(5): [["i swim"], ["my jo"]],
    np.int32(0): [["i hate mondays"]],  # PAML's own cluster 0: deleted with the unmapped
    np.int32(7): [["i like jazz"]],  # one dialogue only: dropped
    np.int32(9): [["nobody has this persona"]],
}


def episode_lines(d: int, persona: list[str], turns: int) -> list[str]:
    """One episode exactly as train_self_original.txt has it (gold = the 20th candidate)."""
    lines = [f"your persona: {s}" for s in persona]
    for t in range(turns):
        gold = f"reply {t} of dialogue {d} ."
        cands = [f"distractor {k} for {d} {t} ." for k in range(19)] + [gold]
        lines.append(f"partner says {t} in {d} .\t{gold}\t\t{'|'.join(cands)}")
    return [f"{n} {text}" for n, text in enumerate(lines, 1)]


def write_self_original(path: Path, episodes=EPISODES) -> Path:
    lines = [ln for d, (p, t) in enumerate(episodes) for ln in episode_lines(d, p, t)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dialogue_ids(dialogues) -> list[int]:
    return [d.episode for d in dialogues]


@pytest.fixture
def dialogues(tmp_path: Path):
    return read_parlai(write_self_original(tmp_path / "train_self_original.txt"))


def test_reader_handles_self_original_files(dialogues) -> None:
    assert len(dialogues) == len(EPISODES)  # the last episode is kept (the paper drops it)
    first = dialogues[0]
    assert first.persona == ("i like cats.", "i live in ohio.")
    assert [len(d.examples) for d in dialogues] == [t for _, t in EPISODES]
    ex = dialogues[1].examples[2]
    assert len(ex.candidates) == 20 and ex.label == 19
    assert ex.response == "reply 2 of dialogue 1 ."
    assert ex.history == (
        "partner says 0 in 1 .", "reply 0 of dialogue 1 .",
        "partner says 1 in 1 .", "reply 1 of dialogue 1 .",
        "partner says 2 in 1 .",
    )  # fmt: skip
    assert dialogue_ids(dialogues) == list(range(len(EPISODES)))


def test_clusters_follow_the_papers_order(dialogues) -> None:
    clustering = cluster_dialogues(dialogues, PERSONA_MAP)
    # clusters in order of their first persona; dialogues grouped by persona, then file order
    assert {c: dialogue_ids(d) for c, d in clustering.clusters.items()} == {
        3: [0, 2, 6, 13],  # P1 and its permutation are one persona
        41: [1, 4, 12],
        5: [5, 11, 10],  # P6's dialogues first (it appeared first), then P7's
        0: [7, 8],
        7: [9],
    }
    assert dialogue_ids(clustering.unmapped) == [3] and clustering.unmapped_personas == 1
    assert clustering.dialogues_per_cluster() == {3: 4, 5: 3, 41: 3, 0: 2, 7: 1}


def test_tasks_drop_small_clusters_and_cluster_0_and_sort_largest_first(dialogues) -> None:
    tasks = cluster_tasks(dialogues, PERSONA_MAP, n_heldout=1)
    # train examples: 5 -> 8, 3 -> 6, 41 -> 6; numpy's flipped argsort puts the later tie first
    assert [t.cluster_id for t in tasks] == [5, 41, 3]
    assert [len(t.train) for t in tasks] == [8, 6, 6]
    five = tasks[0]
    assert dialogue_ids(five.train_dialogues) == [5, 11]
    assert dialogue_ids(five.heldout_dialogues) == [10]
    assert five.key == "cluster-5" and len(five.examples) == 9
    kept = cluster_tasks(dialogues, PERSONA_MAP, n_heldout=1, drop_cluster=None)
    zero = [t for t in kept if t.cluster_id == 0]
    assert len(zero) == 1 and dialogue_ids(zero[0].dialogues) == [7, 8, 3]


def test_new_tasks_hold_out_the_last_two_dialogues_as_query(dialogues) -> None:
    tasks = new_tasks(dialogues, PERSONA_MAP, n_tasks=3, query_dialogues=2)
    assert [t.cluster_id for t in tasks] == [5, 3, 41]  # support sizes 4, 4, 3
    by_id = {t.cluster_id: t for t in tasks}
    assert dialogue_ids(by_id[3].train_dialogues) == [0, 2]
    assert dialogue_ids(by_id[3].heldout_dialogues) == [6, 13]
    assert len(by_id[41].train) == 3 and len(by_id[41].heldout) == 6
    # the PersonaTask path still takes a cluster task
    support, query = split_support_query(by_id[3], n_support=2, seed=0)
    assert len(support) + len(query) == 8


def test_retraining_tasks_and_their_refusals(dialogues) -> None:
    (task,) = retraining_tasks(dialogues, PERSONA_MAP, n_tasks=1, validation_dialogues=3)
    assert task.cluster_id == 3 and dialogue_ids(task.heldout_dialogues) == [2, 6, 13]
    with pytest.raises(MetanbError, match=r"^asked for 4 retraining tasks but only 3 persona"):
        retraining_tasks(dialogues, PERSONA_MAP, n_tasks=4, validation_dialogues=1)
    with pytest.raises(MetanbError, match=r"^retraining task cluster-\d+ has 3 dialogues: hold"):
        retraining_tasks(dialogues, PERSONA_MAP, n_tasks=3, validation_dialogues=3)
    with pytest.raises(MetanbError, match="must be at least 1"):
        new_tasks(dialogues, PERSONA_MAP, n_tasks=0)


def write_folder(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    write_self_original(folder / "train_self_original.txt")
    write_self_original(folder / "valid_self_original.txt", EPISODES[:9])
    (folder / "train_persona_map").write_bytes(pickle.dumps(PERSONA_MAP, protocol=3))
    valid = {str(int(k)): v for k, v in PERSONA_MAP.items()}
    (folder / "valid_persona_map.json").write_text(json.dumps(valid))
    return folder


def test_folder_loads_both_splits_and_maps(tmp_path: Path) -> None:
    data = load_persona_chat_folder(write_folder(tmp_path / "pc"))
    assert len(data.train) == 14 and len(data.valid) == 9
    assert data.train_map == data.valid_map and list(data.train_map) == [3, 41, 5, 0, 7, 9]
    (tmp_path / "pc" / "valid_self_original.txt").unlink()
    with pytest.raises(MetanbError, match=r"lacks valid_self_original\.txt; a Persona-Chat"):
        load_persona_chat_folder(tmp_path / "pc")
    with pytest.raises(MetanbError, match="is not a folder"):
        load_persona_chat_folder(tmp_path / "pc" / "train_persona_map")


def test_inspect_with_a_persona_map(tmp_path: Path, capsys) -> None:
    folder = write_folder(tmp_path / "pc")
    args = ["data", "inspect", str(folder / "train_self_original.txt")]
    assert main([*args, "--persona-map", str(folder / "train_persona_map"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dialogues"] == 14 and summary["examples"] == 34
    assert summary["clusters"] == 5  # cluster 9 has no dialogue
    assert summary["dialogues_per_cluster"] == {"3": 4, "5": 3, "41": 3, "0": 2, "7": 1}
    assert list(summary["dialogues_per_cluster"]) == ["3", "5", "41", "0", "7"]
    assert summary["unmapped_dialogues"] == 1 and summary["unmapped_personas"] == 1
    assert main([*args, "--persona-map", str(folder / "valid_persona_map.json")]) == 0
    out = capsys.readouterr().out
    assert "unmapped_dialogues" in out and "3: 4, 5: 3, 41: 3, 0: 2, 7: 1" in out


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_download_fills_a_folder_from_pinned_sources(tmp_path: Path, monkeypatch) -> None:
    src = write_folder(tmp_path / "published")
    archive = _archive(
        tmp_path / "personachat.tgz",
        {
            "personachat/train_self_original.txt": (src / "train_self_original.txt").read_bytes(),
            "personachat/valid_self_original.txt": (src / "valid_self_original.txt").read_bytes(),
        },
    )
    (src / "valid_persona_map").write_bytes(pickle.dumps(PERSONA_MAP, protocol=2))
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (archive, src / "train_persona_map", src / "valid_persona_map")}
    urls = {"personachat.tgz": archive.as_uri(),
            "train_persona_map": (src / "train_persona_map").as_uri(),
            "valid_persona_map": (src / "valid_persona_map").as_uri()}
    for name, url in urls.items():
        monkeypatch.setitem(pc.SOURCES, name, pc.Source(url, None, name))
    out = tmp_path / "data"
    # the maps are not pinned: nothing is fetched for them without a digest
    with pytest.raises(MetanbError, match=r"^train_persona_map has no pinned sha256"):
        download_persona_chat(out, sha256={"personachat.tgz": digest["personachat.tgz"]},
                              progress=False)
    assert (out / "train_self_original.txt").is_file()
    assert not (out / "train_persona_map").exists()
    download_persona_chat(out, sha256=digest, progress=False)
    data = load_persona_chat_folder(out)
    assert len(data.train) == 14 and len(data.valid) == 9 and data.valid_map == data.train_map
    for path in (archive, src / "train_persona_map", src / "valid_persona_map"):
        path.unlink()  # a second call is served from the folder
    assert download_persona_chat(out, sha256=digest, progress=False) == out


def test_paper_sources_pin_the_parlai_archive() -> None:
    tgz = pc.SOURCES["personachat.tgz"]
    assert tgz.url == "http://parl.ai/downloads/personachat/personachat.tgz"
    assert tgz.sha256 == "507cf8641d333240654798870ea584d854ab5261071c5e3521c20d8fa41d5622"
    # PAML's digests are not known here: they must be filled in, never guessed
    assert pc.SOURCES["train_persona_map"].sha256 is None
    assert pc.SOURCES["valid_persona_map"].sha256 is None


def test_offline_folder_runs_the_papers_cut(tmp_path: Path, capsys) -> None:
    from metanb.data import write_offline_persona_chat

    folder = write_offline_persona_chat(tmp_path / "off", train_clusters=4, valid_clusters=3,
                                        personas_per_cluster=2, dialogues_per_persona=3, turns=2)
    assert sorted(p.name for p in folder.iterdir()) == [
        "train_persona_map.json", "train_self_original.txt",
        "valid_persona_map.json", "valid_self_original.txt"]
    data = load_persona_chat_folder(folder)
    assert len(data.train) == 24 and len(data.valid) == 18
    assert sorted(data.train_map) == [1, 2, 3, 4] and sorted(data.valid_map) == [1, 2, 3]
    train = retraining_tasks(data.train, data.train_map, n_tasks=4, validation_dialogues=3)
    new = new_tasks(data.valid, data.valid_map, n_tasks=3, query_dialogues=2)
    assert [len(t.dialogues) for t in train + new] == [6] * 7
    assert [len(t.heldout) for t in train] == [6] * 4 and [len(t.train) for t in new] == [8] * 3
    assert all(len(ex.candidates) == 20 for t in train for ex in t.examples)
    # train and valid personas are disjoint
    train_personas = {p for ps in data.train_map.values() for p in ps}
    assert not train_personas & {p for ps in data.valid_map.values() for p in ps}
    args = ["data", "inspect", str(folder / "valid_self_original.txt"), "--json"]
    assert main([*args, "--persona-map", str(folder / "valid_persona_map.json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unmapped_dialogues"] == 0 and summary["clusters"] == 3


def test_download_cli_refuses_a_malformed_digest_option(tmp_path: Path, capsys) -> None:
    assert main(["data", "download", "--out", str(tmp_path), "--sha256", "nope"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--sha256 'nope': expected NAME=DIGEST with NAME one of" in err
    assert list(tmp_path.iterdir()) == []
