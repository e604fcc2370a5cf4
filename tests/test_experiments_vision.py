"""The vision experiment through the shared runner: config and profiles, the CLI, resume.

A tiny grid (digits, 2 epochs, width 16) so the whole file runs in seconds; the resume tests
replace retraining by a function that fails, so "trains nothing" is checked, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metanb.cli import main
from metanb.errors import MetanbError
from metanb.experiments.grid import EXPERIMENTS, grid_cells, load_experiment_config
from metanb.experiments.profiles import load_profile, profile_names
from metanb.experiments.results import find_runs, format_report
from metanb.experiments.runner import read_jsonl, run_grid
from metanb.experiments.vision import VISION_METHODS, VisionConfig, vision_cell

TINY = {"seeds": [1], "retrain.methods": ["standard", "lora-ml"], "retrain.epochs": 2,
        "finetune.epochs": 2, "model.dim": 16, "retrain.batch_size": 128}


def tiny() -> VisionConfig:
    return load_profile("quick", "vision").override(TINY).validate()


@pytest.fixture(autouse=True)
def _needs_sklearn():
    pytest.importorskip("sklearn")


def test_vision_is_one_registered_experiment_with_three_profiles():
    assert "vision" in EXPERIMENTS and "convai2" in EXPERIMENTS
    assert profile_names("vision") == ["colab", "paper", "quick"]
    quick = load_profile("quick", "vision")
    assert isinstance(quick, VisionConfig) and quick.data.dataset == "digits"
    assert quick.device == "cpu" and len(quick.seeds) >= 3
    assert quick.retrain.methods == list(VISION_METHODS)
    paper = load_profile("paper", "vision")
    # the official CIFAR-10 settings
    assert (paper.data.dataset, paper.seeds, paper.retrain.epochs, paper.finetune.epochs) == (
        "cifar10", [1, 2, 3, 4, 5], 100, 100)
    assert (paper.retrain.lr, paper.finetune.lr, paper.retrain.batch_size) == (1e-4, 5e-4, 256)
    assert paper.retrain.ranks == paper.finetune.ranks == [1]
    mixer = paper.settings(1).mixer()
    assert (mixer.patch_size, mixer.dim, mixer.depth, mixer.dropout) == (4, 512, 1, 0.1)
    assert load_profile("colab", "vision").data.dataset == "cifar10"
    # convai2's profiles are unchanged and do not list vision's
    assert "quick" in profile_names() and load_profile("quick").experiment == "convai2"


def test_config_round_trips_and_refuses_bad_settings(tmp_path: Path):
    cfg = tiny()
    assert load_experiment_config(cfg.save(tmp_path / "c.yaml")) == cfg
    assert cfg.override(["retrain.lr=3e-3"]).retrain.lr == 3e-3
    with pytest.raises(MetanbError, match=r"unknown config key 'retrain\.steps'; valid keys: "
                                          r"experiment, .*retrain\.epochs"):
        cfg.override(["retrain.steps=3"])
    with pytest.raises(MetanbError, match="unknown config key 'tasks'"):
        VisionConfig.from_dict({"tasks": {}})
    bad = {"data.dataset": "mnist", "retrain.methods": ["maml"], "retrain.epochs": 0,
           "finetune.lr": 0.0, "retrain.mixed_precision": "fp8", "seeds": [1, 1]}
    for key, value in bad.items():
        with pytest.raises(MetanbError):
            cfg.override({key: value}).validate()
    # the grid axes are not part of the fingerprint (a folder's grid may grow)
    assert cfg.fingerprint() == cfg.override({"seeds": [1, 2]}).fingerprint()
    assert cfg.fingerprint() != cfg.override({"retrain.lr": 1.0}).fingerprint()


def test_dry_run_json_lists_every_cell(tmp_path: Path, capsys):
    assert main(["run", "vision", "--profile", "quick", "--out", str(tmp_path / "r"),
                 "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["experiment"] == "vision" and out["config"]["profile"] == "quick"
    quick = load_profile("quick", "vision")
    assert out["cells"] == [c.name for c in grid_cells(quick)]
    assert len(out["cells"]) == len(quick.seeds) * 4  # every method; lora-ml at rank 1
    assert out["to_run"]["lora-ml-r1-seed1"] == ["0", "1", "head"]
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


@pytest.mark.parametrize(("argv", "message"), [
    (["--profile", "huge"], "unknown profile 'huge' of vision; choose from colab, paper, quick"),
    (["--set", "retrain.steps=1"], "unknown config key 'retrain.steps'"),
    (["--methods", "maml"], "retrain.methods holds 'maml'"),
    (["--json"], "--json goes with --dry-run"),
])
def test_bad_run_arguments_are_one_line(tmp_path: Path, capsys, argv, message):
    assert main(["run", "vision", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def _no_retraining(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("retrained although it should not have")

    monkeypatch.setattr("metanb.vision.cell.retrain_vision", refuse)


def test_grid_runs_records_provenance_and_a_finished_grid_trains_nothing(tmp_path, monkeypatch):
    cfg = tiny()
    report = run_grid(cfg, tmp_path, progress=False)
    assert report.skipped == 0 and len(report.written) == 2 * 3  # 2 cells x (0, 1, head)
    records = read_jsonl(tmp_path / "results.jsonl")
    assert {(r["method"], r["finetune"]) for r in records} == {
        (m, f) for m in ("standard", "lora-ml") for f in ("0", "1", "head")}
    for r in records:
        assert r["experiment"] == "vision" and set(r["accuracy_per_persona"]) == {"8/9"}
        assert 0.0 <= r["accuracy"] <= 1.0 and r["test_images"] > 0
        assert r["provenance"]["git_commit"] and r["provenance"]["torch"]
    assert {r["retrain_rank"] for r in records if r["method"] == "lora-ml"} == {1}
    assert not (tmp_path / "work").exists()  # scratch removed once the grid is done

    _no_retraining(monkeypatch)
    again = run_grid(cfg, tmp_path, progress=False)
    assert again.written == [] and again.cells_run == [] and again.skipped == 6
    # ... and the results report reads it back through the vision config
    text = format_report(find_runs(tmp_path))
    assert "MLP-Mixer (dim 16, patch 2)" in text and "lora-ml − standard" in text
    # ... and so does `metanb results`, figures included (a vision config has no tasks.retrain)
    assert main(["results", str(tmp_path)]) == 0
    assert (tmp_path / "accuracy_vs_rank.png").stat().st_size > 1000


def test_an_interrupted_cell_resumes_its_evaluations_from_the_saved_base(tmp_path, monkeypatch):
    cfg = tiny().override({"retrain.methods": ["lora-ml"]})

    def first_only(cell, specs, ctx):
        for result in vision_cell(cell, specs, ctx):
            yield result
            raise KeyboardInterrupt  # killed after its first record

    with pytest.raises(KeyboardInterrupt):
        run_grid(cfg, tmp_path, cell_fn=first_only, progress=False)
    first = read_jsonl(tmp_path / "results.jsonl")
    assert [r["finetune"] for r in first] == ["0"]
    assert (tmp_path / "work" / "lora-ml-r1-seed1" / "base.pt").is_file()

    _no_retraining(monkeypatch)  # the base is reloaded, not retrained
    report = run_grid(cfg, tmp_path, progress=False)
    assert [r["finetune"] for r in report.written] == ["1", "head"]
    records = read_jsonl(tmp_path / "results.jsonl")
    # one base for the whole cell: the same retraining loss and time in every record
    assert len({(r["retrain_final_loss"], r["retrain_wall_s"]) for r in records}) == 1


def test_a_folder_of_another_experiment_is_refused(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(load_profile("quick").to_yaml(), encoding="utf-8")
    with pytest.raises(MetanbError, match="holds a run of experiment 'convai2', not 'vision'"):
        run_grid(tiny(), tmp_path, progress=False)
