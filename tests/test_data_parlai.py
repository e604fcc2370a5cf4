"""The ParlAI ConvAI2 reader/writer on small files written here (every variant, every bad line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metanb import MetanbError
from metanb.data import (
    Dialogue,
    Example,
    generate_persona_chat,
    group_by_persona,
    iter_parlai,
    read_parlai,
    write_parlai,
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# an episode as in train_self_original.txt, except that the true response is not always last
SELF = [
    "1 your persona: i like to ski .",
    "2 your persona: i have a dog .",
    "3 hi , how are you ?\tgreat , just back from skiing .\t\t"
    "great , just back from skiing .|i hate snow .|i am a cat person .",
    "4 do you have pets ?\tyes , a dog .\t\tno pets .|yes , a dog .|i have a parrot .",
    "5 nice .\tthanks !\t\tthanks !|bye .|what ?",
    "1 your persona: i am a chef .",
    "2 hello !\thi , i cook for a living .\t\ti am a pilot .|hi , i cook for a living .",
]


def test_self_file_gives_personas_histories_and_matched_labels(tmp_path):
    dialogues = read_parlai(write_lines(tmp_path / "train_self_original.txt", SELF))
    assert len(dialogues) == 2
    first, second = dialogues
    assert first.persona == ("i like to ski .", "i have a dog .")
    assert first.partner_persona == ()
    assert first.source.endswith("train_self_original.txt")
    assert (first.episode, second.episode) == (0, 1)
    a, b, c = first.examples
    assert a.history == ("hi , how are you ?",)
    assert b.history == (
        "hi , how are you ?",
        "great , just back from skiing .",
        "do you have pets ?",
    )
    assert c.history == (*b.history, "yes , a dog .", "nice .")
    # the label is found by matching, wherever the response sits among the candidates
    assert [ex.label for ex in (a, b, c)] == [0, 1, 0]
    assert b.candidates == ("no pets .", "yes , a dog .", "i have a parrot .")
    assert second.persona == ("i am a chef .",)
    assert second.examples[0] == Example(
        ("hello !",), ("i am a pilot .", "hi , i cook for a living ."), 1
    )
    assert dialogues.skipped == 0


def test_revised_persona_is_read_like_the_original(tmp_path):
    revised = [line.replace("i like to ski", "skiing is my passion") for line in SELF]
    dialogues = read_parlai(write_lines(tmp_path / "valid_self_revised.txt", revised))
    assert dialogues[0].persona == ("skiing is my passion .", "i have a dog .")
    assert [len(d.examples) for d in dialogues] == [3, 1]


def test_both_file_keeps_the_partner_persona_apart(tmp_path):
    lines = [
        "1 your persona: i like to ski .",
        "2 partner's persona: i am a nurse .",
        "3 partner's persona: i love cats .",
        "4 hi !\thello , do you ski ?\t\tno .|hello , do you ski ?",
    ]
    (dialogue,) = read_parlai(write_lines(tmp_path / "train_both_original.txt", lines))
    assert dialogue.persona == ("i like to ski .",)
    assert dialogue.partner_persona == ("i am a nurse .", "i love cats .")
    assert dialogue.examples[0].label == 1


def test_none_file_has_examples_but_no_persona_task(tmp_path):
    lines = [line for line in SELF if "persona:" not in line]
    renumbered = [
        "1 " + lines[0].split(" ", 1)[1],
        "2 " + lines[1].split(" ", 1)[1],
        "3 " + lines[2].split(" ", 1)[1],
        "1 " + lines[3].split(" ", 1)[1],
    ]
    dialogues = read_parlai(write_lines(tmp_path / "train_none_original.txt", renumbered))
    assert [d.persona for d in dialogues] == [(), ()]
    assert [len(d.examples) for d in dialogues] == [3, 1]
    with pytest.raises(MetanbError, match="no persona.*none_"):
        group_by_persona(dialogues)


def test_extra_copies_of_the_true_response_are_dropped(tmp_path):
    lines = ["1 your persona: x .", "2 hi\tyo\t\tyo|a|yo|b|yo"]
    (dialogue,) = read_parlai(write_lines(tmp_path / "dup.txt", lines))
    ex = dialogue.examples[0]
    assert ex.candidates == ("a", "b", "yo")
    assert ex.label == 2


def test_crlf_endings_and_blank_lines_are_tolerated(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"1 your persona: x .\r\n\r\n2 hi\tyo\t\ta|yo\r\n")
    (dialogue,) = read_parlai(path)
    assert dialogue.examples[0] == Example(("hi",), ("a", "yo"), 1)


BAD_LINES = {
    "no tab": (b"3 hello there no tab here", "got no tab"),
    "response not a candidate": (
        b"3 hello\tnot listed\t\ta|b",
        "expected the response 'not listed'",
    ),
    "line number jumps": (b"7 hello\tb\t\ta|b", "expected line number 3"),
    "empty candidates": (b"3 hello\tb\t\t", "expected a non-empty candidate list"),
    "no candidate field": (b"3 hello\tb", "expected a non-empty candidate list"),
    "not utf-8": (b"3 hell\xff\tb\t\ta|b", "expected UTF-8 text, got byte 0xff"),
    "no line number": (b"hello\tb\t\ta|b", "expected a line number"),
}


def bad_file(tmp_path: Path, bad: bytes) -> Path:
    path = tmp_path / "bad.txt"
    path.write_bytes(
        b"1 your persona: i like tea .\n2 hi\tyo\t\tyo|no\n" + bad + b"\n4 later\tok\t\tno|ok\n"
    )
    return path


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_names_file_line_and_expectation(tmp_path, kind):
    bad, expected = BAD_LINES[kind]
    path = bad_file(tmp_path, bad)
    with pytest.raises(MetanbError) as info:
        read_parlai(path)
    message = str(info.value)
    assert f"{path}:3: " in message
    assert expected in message
    assert "skip_bad" in message


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_skip_bad_skips_and_counts_the_bad_line(tmp_path, kind):
    bad, expected = BAD_LINES[kind]
    dialogues = read_parlai(bad_file(tmp_path, bad), skip_bad=True)
    assert dialogues.skipped == 1
    assert expected in dialogues.problems[0]
    (dialogue,) = dialogues
    assert [ex.history[-1] for ex in dialogue.examples] == ["hi", "later"]
    later = dialogue.examples[1]
    assert later.response == "ok"
    if kind in ("response not a candidate", "empty candidates", "no candidate field"):
        # the texts of a well-formed turn still belong to the conversation's history
        assert later.history == ("hi", "yo", "hello", bad.split(b"\t")[1].decode(), "later")


def test_file_must_start_an_episode_at_line_one(tmp_path):
    path = write_lines(tmp_path / "late.txt", ["2 hi\tyo\t\tyo|no", "3 more\tok\t\tok|no"])
    with pytest.raises(MetanbError, match=r"late.txt:1: expected line number 1"):
        read_parlai(path)
    dialogues = read_parlai(path, skip_bad=True)
    assert dialogues.skipped == 1
    assert [ex.response for d in dialogues for ex in d.examples] == ["ok"]


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(MetanbError, match="no such ParlAI file.*data generate"):
        read_parlai(tmp_path / "absent.txt")


def test_iter_parlai_yields_dialogues_lazily(tmp_path):
    path = write_lines(tmp_path / "train_self_original.txt", SELF)
    stream = iter_parlai(path)
    assert next(stream).persona == ("i like to ski .", "i have a dog .")
    assert len(list(stream)) == 1


def test_write_then_read_round_trips_generated_dialogues(tmp_path):
    dialogues = generate_persona_chat(personas=3, dialogues_per_persona=2, candidates=5, seed=4)
    both = [
        Dialogue(d.persona, d.examples, partner_persona=("i am the partner .",)) for d in dialogues
    ]
    path = write_parlai(both, tmp_path / "round.txt")
    back = read_parlai(path)
    assert [d.examples for d in back] == [d.examples for d in both]
    assert [d.persona for d in back] == [d.persona for d in both]
    assert [d.partner_persona for d in back] == [d.partner_persona for d in both]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round.txt"]  # no temporary left


def test_write_refuses_separator_characters_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    bad = Dialogue(("p .",), [Example(("hi",), ("a|b", "c"), 1)])
    with pytest.raises(MetanbError, match="contains '\\|'"):
        write_parlai([bad], path)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_refuses_examples_that_are_not_one_conversation(tmp_path):
    broken = Dialogue(("p .",), [Example(("hi",), ("a", "b"), 0), Example(("other",), ("a",), 0)])
    with pytest.raises(MetanbError, match="does not continue"):
        write_parlai([broken], tmp_path / "x.txt")
