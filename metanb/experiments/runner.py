"""The grid runner: methods x seeds (x retraining ranks), resumable at any moment.

A *cell* is one retraining run, ``(method, seed, retraining rank)``; it produces one base model
that is evaluated as is (fine-tuning rank 0, the reference), after LoRA fine-tuning at every
listed rank, and after last-layer fine-tuning. Each evaluation becomes one *record*, appended
to ``results.jsonl`` as soon as it exists (one ``write`` of one line, then ``fsync``), so a run
killed at any moment loses at most the work since the last record or retraining checkpoint.

The runner knows nothing about any experiment: it calls the *cell function* of
``config.experiment`` (:data:`metanb.experiments.grid.EXPERIMENTS`; tests inject a fake)
that yields one :class:`CellResult` per fine-tuning spec it was asked for. Re-running the
same command reads the records, skips every finished evaluation and calls the cell function
only for what is missing; a finished grid does no training at all.

Under ``accelerate launch`` every process runs the same grid (retraining is data-parallel
inside :func:`metanb.retrain.retrain`); only the main process writes files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig, diff
from metanb.experiments.grid import (
    HEAD,
    NO_FINETUNE,
    Cell,
    CellContext,
    CellFunction,
    CellResult,
    FinetuneSpec,
    cell_key,
    experiment_cell,
    finetune_specs,
    grid_cells,
    load_experiment_config,
    record_key,
)
from metanb.io import atomic_write_bytes, atomic_write_text

# the grid's vocabulary lives in metanb.experiments.grid; re-exported for callers of old
__all__ = ["BASE_FILE", "HEAD", "NO_FINETUNE", "Cell", "CellContext", "CellFunction", "CellResult",
           "FinetuneSpec", "finetune_specs", "grid_cells", "plan", "read_jsonl", "record_key",
           "restart_partial_cells", "run_grid"]

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.yaml"
WORK_DIR = "work"
# A cell function that saves its retrained base as work/<cell>/BASE_FILE before its first
# evaluation may be resumed part-way; a cell with some records but no such file is re-run
# whole (see restart_partial_cells), so all records of a cell come from one base.
BASE_FILE = "base.pt"


# ---- atomic JSONL ----------------------------------------------------------------------------

def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line with a single write, flushed to disk.

    A crash can at worst leave a torn *last* line, which :func:`read_jsonl` ignores and
    :func:`repair_jsonl` removes before the next append.
    """
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a torn last line from a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the unterminated tail of an interrupted write
                continue
            raise MetanbError(f"{path}:{number} is not a JSON record; the results file is "
                              "corrupt, remove that line or use a fresh --out") from None
    return records


def repair_jsonl(path: Path) -> None:
    """Cut an unterminated last line (left by a kill during a write) so appends stay valid."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


# ---- the run folder's config -----------------------------------------------------------------

def _merged(old: ExperimentConfig, new: ExperimentConfig) -> ExperimentConfig:
    """``new`` with grid axes extended by ``old``'s, so config.yaml describes every record."""

    def union(a: list[Any], b: list[Any]) -> list[Any]:
        return a + [x for x in b if x not in a]

    return new.override({
        "seeds": union(old.seeds, new.seeds),
        "retrain.methods": union(old.retrain.methods, new.retrain.methods),
        "retrain.ranks": union(old.retrain.ranks, new.retrain.ranks),
        "finetune.ranks": union(old.finetune.ranks, new.finetune.ranks),
        "finetune.head": old.finetune.head or new.finetune.head,
    })


def prepare_run_dir(config: ExperimentConfig, out: Path, write: bool = True) -> None:
    """Create ``out`` and its config.yaml; refuse a folder holding a run with other settings.

    The same folder may be re-used to resume, or to *extend* its grid (more seeds, methods or
    ranks); any other difference would mix incomparable records, so it is an error.
    """
    path = out / CONFIG_FILE
    if path.exists():
        old = load_experiment_config(path)
        if old.experiment != config.experiment:
            raise MetanbError(f"{out} holds a run of experiment {old.experiment!r}, not "
                              f"{config.experiment!r}; use another --out")
        changes = diff(old.fingerprint(), config.fingerprint())
        if changes:
            more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
            raise MetanbError(
                f"{out} holds a run with different settings: {changes[0]}{more}; use another "
                "--out, or the same settings to resume")
        config = _merged(old, config)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, config.to_yaml())


def is_main_process() -> bool:
    """True unless this is a non-zero rank of ``accelerate launch`` / ``torchrun``."""
    return int(os.environ.get("RANK", "0")) == 0


def _barrier(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from metanb.retrain.loop import process_state

        process_state(None if device == "auto" else device).wait_for_everyone()


# ---- the runner ------------------------------------------------------------------------------

@dataclass
class RunReport:
    """What one invocation did: how many evaluations were already there, and which it ran."""

    out: Path
    skipped: int
    written: list[dict[str, Any]]
    cells_run: list[str]


def plan(config: ExperimentConfig, records: Iterable[dict[str, Any]]
         ) -> list[tuple[Cell, list[FinetuneSpec]]]:
    """The cells with missing evaluations, each with the specs still to run."""
    done = {record_key(r) for r in records}
    todo = []
    for cell in grid_cells(config):
        specs = [s for s in finetune_specs(config, cell) if cell_key(cell, s) not in done]
        if specs:
            todo.append((cell, specs))
    return todo


def restart_partial_cells(config: ExperimentConfig, out: Path, records: list[dict[str, Any]],
                          write: bool = True) -> tuple[list[dict[str, Any]], list[Cell]]:
    """Drop the records of every partly evaluated cell whose saved base is gone.

    Such a cell would otherwise be retrained and its missing evaluations run on a *second*
    base (its work folder is scratch: lost with a fresh clone, a copy of the results, or a
    kill before the base was saved), mixing two retrainings in one cell. Its records are
    removed from results.jsonl in one atomic rewrite so the whole cell runs again; returns the
    remaining records and the cells restarted.
    """
    stale = [cell for cell, specs in plan(config, records)
             if len(specs) < len(finetune_specs(config, cell))
             and not (out / WORK_DIR / cell.name / BASE_FILE).exists()]
    if not stale:
        return records, []
    keys = {(c.method, c.seed, c.retrain_rank) for c in stale}
    kept = [r for r in records if (r["method"], r["seed"], r["retrain_rank"]) not in keys]
    if write:
        atomic_write_text(out / RESULTS_FILE,
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return kept, stale


def make_record(config: ExperimentConfig, cell: Cell, result: CellResult,
                prov: dict[str, Any]) -> dict[str, Any]:
    """One line of results.jsonl: the numbers plus everything needed to trust them later."""
    accs = result.accuracy_per_persona
    return {
        "experiment": config.experiment,
        "profile": config.profile,
        "method": cell.method,
        "seed": cell.seed,
        "retrain_rank": cell.retrain_rank,
        "finetune": result.spec.label,
        "finetune_kind": result.spec.kind,
        "finetune_rank": result.spec.rank,
        "accuracy": sum(accs.values()) / len(accs),
        "accuracy_per_persona": dict(accs),
        "wall_s": round(result.wall_s, 3),
        **result.extra,
        "config": config.to_dict(),
        "provenance": {**prov, "time_utc": _now()},
    }


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_grid(
    config: ExperimentConfig,
    out: str | Path,
    cell_fn: CellFunction | None = None,
    progress: bool = True,
    keep_work: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunReport:
    """Run (or resume) the grid of ``config`` into ``out``; return what was done.

    ``cell_fn`` defaults to the cell function of ``config.experiment``. ``keep_work`` keeps the
    retraining checkpoints and saved bases under ``out/work`` after the grid finishes (they are
    needed only to resume an unfinished cell).
    """
    config.validate()
    config.check_inputs()  # before anything is written: a missing data file leaves no folder
    out = Path(out)
    if cell_fn is None:
        cell_fn = experiment_cell(config.experiment)
    main = is_main_process()
    prepare_run_dir(config, out, write=main)
    results = out / RESULTS_FILE
    if main:
        repair_jsonl(results)
    records = read_jsonl(results)
    _barrier(config.device)  # every process plans from the same records
    records, restarted = restart_partial_cells(config, out, records, write=main)
    if log and restarted:
        log(f"{out}: re-running {len(restarted)} cell(s) whose saved base is gone, their old "
            "records dropped: " + ", ".join(c.name for c in restarted))
    todo = plan(config, records)
    total = sum(len(finetune_specs(config, cell)) for cell in grid_cells(config))
    skipped = total - sum(len(specs) for _, specs in todo)
    if log:
        log(f"{out}: {skipped}/{total} evaluations already done, {len(todo)} cell(s) to run")

    from metanb.provenance import provenance

    prov = provenance(None if config.device == "auto" else config.device)
    prov.pop("time_utc")
    written: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    shared = out / WORK_DIR
    bar = tqdm(todo, desc="grid", unit="cell", disable=not progress)
    for cell, specs in bar:
        bar.set_postfix_str(cell.name)
        ctx = CellContext(config=config, workdir=shared / cell.name, shared_dir=shared,
                          cache=cache, progress=progress, is_main=main)
        if main:
            ctx.workdir.mkdir(parents=True, exist_ok=True)
        _barrier(config.device)
        wanted = {s.label for s in specs}
        for result in cell_fn(cell, list(specs), ctx):
            if result.spec.label not in wanted:
                raise RuntimeError(f"cell function returned unrequested spec {result.spec}")
            wanted.discard(result.spec.label)
            record = make_record(config, cell, result, prov)
            if main:
                append_jsonl(results, record)
            written.append(record)
        if wanted:
            raise RuntimeError(f"cell {cell.name} returned no result for {sorted(wanted)}")
        if main and not keep_work:
            shutil.rmtree(ctx.workdir, ignore_errors=True)
    if main and not keep_work and shared.exists():
        shutil.rmtree(shared, ignore_errors=True)
    return RunReport(out=out, skipped=skipped, written=written,
                     cells_run=[cell.name for cell, _ in todo])


def load_config(out: str | Path) -> ExperimentConfig:
    """The config.yaml of a run folder, read by its experiment's config class."""
    return load_experiment_config(Path(out) / CONFIG_FILE)

