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
from pathlib import Path

from metanb.experiments.config import ExperimentConfig
from metanb.experiments.grid import grid_cells
from metanb.experiments.profiles import load_profile
from metanb.experiments.runner import BASE_FILE, WORK_DIR, run_grid


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
    base: ExperimentConfig = load_profile(args.profile).override(args.sets)
    store = args.root / WORK_DIR  # ignored by git (book/results/**/work/)
    for n in args.sizes:
        config = base.override({"tasks.support": n}).validate()
        out = args.root / f"n{n:02d}"
        for cell in grid_cells(config):
            saved, there = store / cell.name / BASE_FILE, out / WORK_DIR / cell.name / BASE_FILE
            if saved.exists() and not there.exists():
                there.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(saved, there)
        run_grid(config, out, progress=False, keep_work=True, log=print)
        for cell in grid_cells(config):
            saved, there = store / cell.name / BASE_FILE, out / WORK_DIR / cell.name / BASE_FILE
            if there.exists() and not saved.exists():
                saved.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(there, saved)
            shutil.rmtree(out / WORK_DIR / cell.name, ignore_errors=True)


if __name__ == "__main__":
    main()
