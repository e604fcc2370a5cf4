"""Adding a method is one place: register it, and the runner, CLI, tables and plots know it."""

from __future__ import annotations

from pathlib import Path

import pytest

from metanb.cli import main
from metanb.experiments.runner import read_jsonl
from metanb.plots.results import method_label
from metanb.plots.style import method_color
from metanb.retrain import METHODS, RetrainMethod, register_method, unregister_method

TOY = [
    "data.personas=6", "data.dialogues_per_persona=3", "tasks.retrain=2", "tasks.heldout=2",
    "tasks.support=4", "tasks.candidates=2", "tasks.max_length=16", "retrain.ranks=[2]",
    "retrain.steps=2", "retrain.batch_size=4", "finetune.ranks=[1]", "finetune.head=false",
    "finetune.steps=1", "finetune.batch_size=4",
]


def two_updates(ctx, task_ids):
    """A toy method: two SR updates per step (a real, different optimisation schedule)."""
    ctx.update(task_ids)
    return ctx.update(task_ids)


@pytest.fixture
def toy_method():
    register_method(RetrainMethod("sr-twice", "two SR updates per step", two_updates,
                                  label="SR x2"))
    yield "sr-twice"
    unregister_method("sr-twice")
    assert "sr-twice" not in METHODS


def test_a_registered_method_runs_through_python_m_metanb_run(toy_method, tmp_path: Path,
                                                              capsys) -> None:
    sets = [a for item in TOY for a in ("--set", item)]
    code = main(["run", "convai2", "--profile", "quick", "--out", str(tmp_path), "--device",
                 "cpu", "--seeds", "0", "--methods", toy_method, "standard", "--no-progress",
                 *sets])
    out = capsys.readouterr().out
    assert code == 0, out
    records = read_jsonl(tmp_path / "results.jsonl")
    assert [(r["method"], r["retrain_rank"], r["finetune"]) for r in records] == [
        ("sr-twice", None, "0"), ("sr-twice", None, "1"),
        ("standard", None, "0"), ("standard", None, "1")]
    assert "sr-twice" in out  # the results table names it
    assert method_label(toy_method) == "SR x2"
    assert method_color(toy_method).startswith("#") and method_color(toy_method) != "#444444"
    assert main(["results", str(tmp_path), "--no-plots"]) == 0
    assert "sr-twice" in capsys.readouterr().out


def test_an_unregistered_method_is_one_line_from_the_cli(tmp_path: Path, capsys) -> None:
    code = main(["run", "convai2", "--profile", "quick", "--out", str(tmp_path), "--methods",
                 "maml", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "unknown method 'maml'" in err and "lora-ml" in err


def test_an_unknown_experiment_is_one_line_listing_the_known_ones(tmp_path: Path, capsys) -> None:
    code = main(["run", "speech", "--profile", "quick", "--out", str(tmp_path / "v"),
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err == "metanb run: error: unknown experiment 'speech'; choose from "\
        "convai2, vision\n"
    assert not (tmp_path / "v").exists()
