"""The grid runner with a fake cell function: resume after a kill, no re-training, atomic JSONL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.results import check_one_base_per_cell
from metanb.experiments.runner import (
    BASE_FILE,
    Cell,
    CellContext,
    CellResult,
    FinetuneSpec,
    append_jsonl,
    finetune_specs,
    grid_cells,
    load_config,
    read_jsonl,
    run_grid,
)

STEPS, EVERY = 10, 4


class Killed(BaseException):
    """Stands for SIGKILL: raised from inside a cell, nothing after it runs."""


class FakeCell:
    """A cell that 'retrains' for STEPS steps with checkpoints, then evaluates each spec.

    The trained 'weight' is a deterministic function of the cell and the step count, so a
    resumed run must produce exactly the numbers of an uninterrupted one. ``kill_at_step`` /
    ``kill_after_results`` simulate a kill during retraining / between two records.
    """

    def __init__(self, kill_at_step: int | None = None, kill_after_results: int | None = None):
        self.kill_at_step = kill_at_step
        self.kill_after_results = kill_after_results
        self.steps_run = 0
        self.results_given = 0
        self.cells_called: list[str] = []
        self.retrained: list[str] = []

    def __call__(self, cell: Cell, specs: list[FinetuneSpec], ctx: CellContext):
        self.cells_called.append(cell.name)
        ckpt, base = ctx.workdir / "ckpt.json", ctx.workdir / BASE_FILE
        if base.exists():
            saved = json.loads(base.read_text())
        else:
            self.retrained.append(cell.name)
            state = json.loads(ckpt.read_text()) if ckpt.exists() else {
                "step": 0, "w": 0.1 * cell.seed + (0.05 if cell.method == "lora-ml" else 0.0)}
            while state["step"] < STEPS:
                state["w"] = round(0.9 * state["w"] + 0.01 * (state["step"] + 1), 12)
                state["step"] += 1
                self.steps_run += 1
                if self.steps_run == self.kill_at_step:
                    raise Killed
                if state["step"] % EVERY == 0:
                    ckpt.write_text(json.dumps(state))
            # "sha256": an identity of this retraining (the fake's stand-in for a digest)
            saved = {"w": state["w"], "sha256": f"{cell.name}/{uuid.uuid4().hex}"}
            base.write_text(json.dumps(saved))
        weight = saved["w"]
        for spec in specs:
            if self.results_given == self.kill_after_results:
                raise Killed
            self.results_given += 1
            accs = {f"persona{i}": round((weight + 0.01 * spec.rank + 0.003 * i) % 1, 12)
                    for i in range(3)}
            yield CellResult(spec=spec, accuracy_per_persona=accs, wall_s=0.0,
                             extra={"retrain_steps": STEPS, "base_sha256": saved["sha256"]})


def tiny_config(**over: str) -> ExperimentConfig:
    sets = ["seeds=[0,1]", "retrain.methods=[standard,lora-ml]", "retrain.ranks=[2]",
            "finetune.ranks=[1,4]", "finetune.head=true", "tasks.retrain=3", "tasks.heldout=3",
            "data.personas=6"] + [f"{k}={v}" for k, v in over.items()]
    return ExperimentConfig().override(sets).validate()


def stable(records: list[dict]) -> list[dict]:
    """Records without what legitimately differs between runs (timings, times, commits, and
    the fake's identity of a retraining)."""
    return [{k: v for k, v in r.items() if k not in ("wall_s", "provenance", "base_sha256")}
            for r in records]


def run(out: Path, cell, config: ExperimentConfig | None = None, keep_work: bool = False):
    return run_grid(config or tiny_config(), out, cell_fn=cell, progress=False,
                    keep_work=keep_work)


def test_grid_layout() -> None:
    cfg = tiny_config(**{"retrain.ranks": "[2,8]"})
    names = [c.name for c in grid_cells(cfg)]
    # SR uses no adapters: one cell per seed whatever the retraining ranks
    assert names == ["standard-seed0", "lora-ml-r2-seed0", "lora-ml-r8-seed0",
                     "standard-seed1", "lora-ml-r2-seed1", "lora-ml-r8-seed1"]
    assert [s.label for s in finetune_specs(cfg)] == ["0", "1", "4", "head"]
    # Reptile attaches no adapters either
    cfg = tiny_config(**{"retrain.ranks": "[2,8]", "retrain.methods": "[reptile,lora-ml]",
                         "seeds": "[0]"})
    assert [c.name for c in grid_cells(cfg)] == ["reptile-seed0", "lora-ml-r2-seed0",
                                                 "lora-ml-r8-seed0"]


def test_the_grid_asks_the_method_registry_which_methods_take_a_rank() -> None:
    from metanb.retrain import RetrainMethod, joint_step, register_method, unregister_method

    register_method(RetrainMethod("toy-adapters", "a toy with adapters", joint_step,
                                  task_adapters=True))
    try:
        cfg = tiny_config(**{"retrain.ranks": "[2,8]", "seeds": "[0]",
                             "retrain.methods": "[toy-adapters,standard]"})
        assert [c.name for c in grid_cells(cfg)] == [
            "toy-adapters-r2-seed0", "toy-adapters-r8-seed0", "standard-seed0"]
    finally:
        unregister_method("toy-adapters")
    with pytest.raises(MetanbError, match="unknown method 'toy-adapters'"):
        tiny_config(**{"retrain.methods": "[toy-adapters]"}).validate()


def test_uninterrupted_run_writes_every_record(tmp_path: Path) -> None:
    cell = FakeCell()
    report = run(tmp_path, cell)
    records = read_jsonl(tmp_path / "results.jsonl")
    assert len(records) == 4 * 4 == len(report.written)  # 4 cells x (0, 1, 4, head)
    assert cell.steps_run == 4 * STEPS
    first = records[0]
    assert first["accuracy"] == pytest.approx(sum(first["accuracy_per_persona"].values()) / 3)
    assert first["config"] == tiny_config().to_dict()
    for key in ("metanb_version", "git_commit", "device", "time_utc"):
        assert key in first["provenance"]
    assert load_config(tmp_path) == tiny_config()
    assert not (tmp_path / "work").exists()  # scratch removed once the grid is complete


@pytest.mark.parametrize("kill", [{"kill_at_step": 7}, {"kill_at_step": 23},
                                  {"kill_after_results": 6}, {"kill_after_results": 0}])
def test_resume_after_kill_gives_the_same_records(tmp_path: Path, kill: dict) -> None:
    reference = FakeCell()
    run(tmp_path / "ref", reference)

    first = FakeCell(**kill)
    with pytest.raises(Killed):
        run(tmp_path / "run", first)
    second = FakeCell()
    run(tmp_path / "run", second)  # the same command again

    got = stable(read_jsonl(tmp_path / "run" / "results.jsonl"))
    want = stable(read_jsonl(tmp_path / "ref" / "results.jsonl"))
    assert got == want
    # at most the steps since the last checkpoint are repeated
    repeated = first.steps_run + second.steps_run - reference.steps_run
    assert 0 <= repeated < EVERY


def test_finished_grid_does_no_training(tmp_path: Path) -> None:
    run(tmp_path, FakeCell())

    def must_not_run(cell, specs, ctx):
        raise AssertionError(f"cell {cell.name} re-run")

    report = run(tmp_path, must_not_run)
    assert report.written == [] and report.cells_run == [] and report.skipped == 16
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 16


def test_extending_the_grid_runs_only_new_cells(tmp_path: Path) -> None:
    run(tmp_path, FakeCell())
    more = tiny_config(**{"seeds": "[0,1,2]", "finetune.ranks": "[1,4,8]"})
    cell = FakeCell()
    report = run(tmp_path, cell, more)
    # the old cells' bases are gone (work was cleaned), so a new rank 8 re-runs each old cell
    # whole on one new base rather than fine-tuning rank 8 on a second base; seed 2 fully
    assert len(report.written) == 4 * 5 + 2 * 5
    assert sorted(cell.cells_called) == sorted(c.name for c in grid_cells(more))
    assert check_one_base_per_cell(read_jsonl(tmp_path / "results.jsonl")) == []
    assert load_config(tmp_path).seeds == [0, 1, 2]
    keys = [(r["method"], r["seed"], r["finetune"]) for r in read_jsonl(tmp_path /
                                                                         "results.jsonl")]
    assert len(keys) == len(set(keys)) == 6 * 5


def test_a_partial_cell_whose_base_is_gone_is_rerun_whole(tmp_path: Path) -> None:
    """The defect of book/results/quick: a cell killed between two evaluations, resumed
    without its work folder (a fresh clone), must not fine-tune the rest on a second base."""
    with pytest.raises(Killed):
        run(tmp_path, FakeCell(kill_after_results=2))  # standard-seed0 has 2 of 5 records
    (tmp_path / "work" / "standard-seed0" / BASE_FILE).unlink()
    before = read_jsonl(tmp_path / "results.jsonl")
    cell = FakeCell()
    report = run(tmp_path, cell)
    assert cell.retrained == [c.name for c in grid_cells(tiny_config())]
    assert report.cells_run[0] == "standard-seed0" and len(report.written) == 16
    after = read_jsonl(tmp_path / "results.jsonl")
    assert len(after) == 16 and not any(r in after for r in before)  # old records dropped
    assert check_one_base_per_cell(after) == []


def test_a_partial_cell_with_its_base_resumes_on_it(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run(tmp_path, FakeCell(kill_after_results=2), keep_work=True)
    before = read_jsonl(tmp_path / "results.jsonl")
    cell = FakeCell()
    run(tmp_path, cell)
    assert "standard-seed0" not in cell.retrained
    after = read_jsonl(tmp_path / "results.jsonl")
    assert after[:2] == before and check_one_base_per_cell(after) == []


def test_kept_work_reuses_the_retrained_base(tmp_path: Path) -> None:
    run(tmp_path, FakeCell(), keep_work=True)
    cell = FakeCell()
    run(tmp_path, cell, tiny_config(**{"finetune.ranks": "[1,4,16]"}), keep_work=True)
    assert cell.steps_run == 0 and len(cell.cells_called) == 4


def test_other_settings_in_the_same_folder_are_refused(tmp_path: Path) -> None:
    run(tmp_path, FakeCell())
    with pytest.raises(MetanbError, match=r"different settings: retrain.steps: 200 != 3"):
        run(tmp_path, FakeCell(), tiny_config(**{"retrain.steps": "3"}))


def test_torn_last_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"a": 1})
    with path.open("a") as f:
        f.write('{"a": 2, "b"')  # killed in the middle of a write
    assert read_jsonl(path) == [{"a": 1}]
    with path.open("a") as f:
        f.write("\n{not json}\n{}\n")
    with pytest.raises(MetanbError, match=r"results.jsonl:2 is not a JSON record"):
        read_jsonl(path)


def test_resume_after_a_torn_write(tmp_path: Path) -> None:
    run(tmp_path / "ref", FakeCell())
    with pytest.raises(Killed):
        run(tmp_path / "run", FakeCell(kill_after_results=5))
    with (tmp_path / "run" / "results.jsonl").open("a") as f:
        f.write('{"method": "standard", "se')
    run(tmp_path / "run", FakeCell())
    assert stable(read_jsonl(tmp_path / "run" / "results.jsonl")) == stable(
        read_jsonl(tmp_path / "ref" / "results.jsonl"))
