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
