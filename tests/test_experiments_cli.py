"""``python -m metanb run/results`` as a user types it: one-line errors, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1"}


def metanb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metanb", *args], capture_output=True,
                          text=True, env=ENV, timeout=120)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "retrain.methods=[standard,maml]"], "unknown method 'maml'"),
        (["--set", "finetune.ranks=[]", "--set", "finetune.head=false"], "nothing to fine-tune"),
        (["--set", "tasks.retrain=1000"], "personas needed but"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--set", "retrain.stepz=3"], "unknown config key 'retrain.stepz'"),
    ],
)
def test_run_config_errors_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = metanb("run", "convai2", "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing written before the config is valid


def test_dry_run_resolves_profile_file_flags_and_sets(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("retrain:\n  steps: 11\n  lr: 2.0e-4\n")
    proc = metanb("run", "convai2", "--profile", "quick", "--config", str(cfg),
                  "--seeds", "3", "4", "--methods", "lora-ml", "--set", "retrain.lr=5e-4",
                  "--out", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    text, _, plan = proc.stdout.rpartition("# ")
    resolved = yaml.safe_load(text)
    assert resolved["profile"] == "quick" and resolved["seeds"] == [3, 4]
    assert resolved["retrain"]["steps"] == 11 and resolved["retrain"]["lr"] == 5e-4
    assert resolved["retrain"]["methods"] == ["lora-ml"]
    assert plan.startswith("2 cells, 2 to run")


def test_results_of_a_missing_folder(tmp_path: Path) -> None:
    proc = metanb("results", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hub_profile_offline_says_what_to_do(tmp_path: Path) -> None:
    proc = metanb("run", "convai2", "--profile", "colab", "--out", str(tmp_path / "r"),
                  "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("metanb run: error: could not load")


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("how", [["--device", "cuda"], ["--set", "device=cuda"]])
def test_cuda_where_torch_has_none_is_one_line(tmp_path: Path, how: list[str]) -> None:
    # no GPU visible: CPU-only torch builds and CUDA builds alike cannot use cuda
    proc = subprocess.run(
        [sys.executable, "-m", "metanb", "run", "convai2", "--profile", "quick",
         "--out", str(tmp_path / "r"), *how], capture_output=True, text=True,
        env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    line = _one_error_line(proc)
    assert line.startswith("metanb run: error: device is cuda, but ")
    assert line.endswith("; use --device auto or --device cpu")
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_out_that_is_a_file_is_one_line(tmp_path: Path, dry_run: list[str]) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    proc = metanb("run", "convai2", "--profile", "quick", "--out", str(existing), *dry_run)
    assert _one_error_line(proc) == (
        f"metanb run: error: --out {existing} is a file; give a folder (it is created if missing)")
    proc = metanb("run", "convai2", "--out", str(existing / "sub"), *dry_run)
    assert _one_error_line(proc) == (
        f"metanb run: error: --out {existing / 'sub'} is inside {existing}, which is a file; "
        "give a folder (it is created if missing)")
    assert existing.read_text() == "keep me\n" and proc.stdout == ""


def test_results_figures_are_written_atomically(tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    from metanb import cli, io

    run = tmp_path / "quick"
    run.mkdir()
    for name in ("config.yaml", "results.jsonl"):
        shutil.copyfile(Path(__file__).parents[1] / "book" / "results" / "quick" / name, run / name)
    calls: list[Path] = []
    real = io.atomic_write_bytes

    def recording(path, data):
        calls.append(Path(path))
        assert data.startswith(b"\x89PNG\r\n\x1a\n")  # a whole PNG rendered before the write
        return real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", recording)
    assert cli.main(["results", str(run)]) == 0
    assert f"wrote {run / 'accuracy_vs_rank.png'}" in capsys.readouterr().err
    assert calls == [run / "accuracy_vs_rank.png"]
    assert sorted(p.name for p in run.iterdir()) == [
        "accuracy_vs_rank.png", "config.yaml", "results.jsonl"]  # no temporary left behind
    assert (run / "accuracy_vs_rank.png").read_bytes().startswith(b"\x89PNG")
