"""Support-size sweep: accuracy after fine-tuning on n = 4 ... 64 examples per new persona.

The retraining of a cell (method, seed) does not read ``tasks.support`` (only the held-out
personas' support / query split does), so each base is retrained once, at the first size, and
its saved checkpoint is copied into the run folder of every other size, where the runner
reloads it as it would a resumed cell (``base_sha256`` in the records shows one base per
(method, seed) across all sizes). One run folder per size, ``ROOT/nNN``; rerun the same command
to resume. Usage (from a clean clone)::

    python tools/support_sweep.py ROOT --sizes 4 8 16 32 64 --set KEY=VALUE ... [--threads N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.grid import grid_cells
from metanb.experiments.profiles import load_profile
from metanb.experiments.runner import BASE_FILE, WORK_DIR, run_grid
from metanb.io import atomic_write


def _copy(source: Path, dest: Path) -> None:
    """Copy a saved base atomically: an interrupted sweep never leaves half a checkpoint."""
    with source.open("rb") as src:
        atomic_write(dest, lambda out: shutil.copyfileobj(src, out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        base: ExperimentConfig = load_profile(args.profile).override(args.sets)
        configs = {n: base.override({"tasks.support": n}).validate() for n in args.sizes}
        sweep(args.root, configs)
    except MetanbError as exc:  # one line, exit 2, as the package's own CLI
        print(f"support_sweep.py: error: {exc}", file=sys.stderr)
        sys.exit(2)


def sweep(root: Path, configs: dict[int, ExperimentConfig]) -> None:
    """Run one folder per support size, each (method, seed) base retrained once."""
    store = root / WORK_DIR  # ignored by git (book/results/**/work/)
    for n, config in configs.items():
        out = root / f"n{n:02d}"
        for cell in grid_cells(config):
            saved, there = store / cell.name / BASE_FILE, out / WORK_DIR / cell.name / BASE_FILE
            if saved.exists() and not there.exists():
                _copy(saved, there)
        run_grid(config, out, progress=False, keep_work=True, log=print)
        for cell in grid_cells(config):
            saved, there = store / cell.name / BASE_FILE, out / WORK_DIR / cell.name / BASE_FILE
            if there.exists() and not saved.exists():
                _copy(there, saved)
            shutil.rmtree(out / WORK_DIR / cell.name, ignore_errors=True)


if __name__ == "__main__":
    main()
