"""``python -m metanb data ...`` through a real subprocess, and the shipped sample."""

from __future__ import annotations

import json
import subprocess
import sys

from metanb.data import (
    SAMPLE_ARGS,
    generate_persona_chat,
    group_by_persona,
    read_parlai,
    sample_path,
    write_parlai,
)

KEYS = {
    "personas",
    "dialogues",
    "examples",
    "candidates_min",
    "candidates_max",
    "examples_per_persona_min",
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metanb", "data", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in out.stderr


def test_sample_is_the_generators_output_for_its_recorded_arguments(tmp_path):
    path = sample_path()
    dialogues = read_parlai(path)
    assert len(group_by_persona(dialogues)) == SAMPLE_ARGS["personas"]
    assert len(dialogues) == SAMPLE_ARGS["personas"] * SAMPLE_ARGS["dialogues_per_persona"]
    fresh = write_parlai(generate_persona_chat(**SAMPLE_ARGS), tmp_path / "fresh.txt")
    assert fresh.read_bytes() == path.read_bytes()


def test_generate_then_inspect_reports_the_counts(tmp_path):
    out_file = tmp_path / "gen.txt"
    gen = run_cli(
        "generate",
        "--personas",
        "5",
        "--dialogues-per-persona",
        "3",
        "--candidates",
        "7",
        "--seed",
        "2",
        "--out",
        str(out_file),
    )
    assert gen.returncode == 0, gen.stderr
    assert str(out_file) in gen.stdout
    inspect = run_cli("inspect", str(out_file), "--json")
    assert inspect.returncode == 0, inspect.stderr
    summary = json.loads(inspect.stdout)
    assert set(summary) == KEYS
    assert summary == {
        "personas": 5,
        "dialogues": 15,
        "examples": 60,
        "candidates_min": 7,
        "candidates_max": 7,
        "examples_per_persona_min": 12,
    }
    expected = generate_persona_chat(5, 3, 7, seed=2)
    assert [d.examples for d in read_parlai(out_file)] == [d.examples for d in expected]


def test_inspect_hf_json_with_skip_bad_counts_the_skipped(tmp_path):
    records = [
        {
            "personality": ["p ."],
            "history": ["hi"],
            "candidates": ["a", "b"],
            "utterance_idx": 0,
            "conv_id": 1,
        },
        {
            "personality": ["p ."],
            "history": ["hi", "b", "ok"],
            "candidates": ["c", "d", "e"],
            "utterance_idx": 1,
            "conv_id": 1,
        },
        {
            "personality": ["q ."],
            "history": ["yo"],
            "candidates": [],
            "utterance_idx": 0,
            "conv_id": 2,
        },
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    out = run_cli("inspect", str(path), "--skip-bad", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "personas": 1,
        "dialogues": 1,
        "examples": 2,
        "candidates_min": 2,
        "candidates_max": 3,
        "examples_per_persona_min": 2,
        "skipped": 1,
    }


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 your persona: p .\n2 hi\tyo\t\ta|b\n")
    assert_one_line_error(
        run_cli("inspect", str(bad), "--json"), f"{bad}:2:", "expected the response"
    )
    assert_one_line_error(run_cli("inspect", str(tmp_path / "absent.txt")), "no such ParlAI file")
    assert_one_line_error(
        run_cli("generate", "--personas", "0", "--out", str(tmp_path / "x.txt")), "personas=0"
    )
    assert_one_line_error(run_cli("generate", "--candidates", "many", "--out", "x"), "invalid int")
    assert not (tmp_path / "x.txt").exists()


def test_inspect_prints_a_readable_table_without_json():
    out = run_cli("inspect", str(sample_path()), "--format", "parlai")
    assert out.returncode == 0, out.stderr
    table = dict(line.split() for line in out.stdout.strip().splitlines())
    assert table["personas"] == str(SAMPLE_ARGS["personas"])
    assert set(table) == KEYS
