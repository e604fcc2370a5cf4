"""``python -m metanb run`` and ``python -m metanb results``.

``run convai2 --profile quick --out DIR [--set key=value ...]`` runs (or resumes) the grid;
``results DIR [--json]`` prints the method x fine-tuning-rank table and writes the figures
next to the results. A folder of run folders (e.g. a sweep over T) is summarised as a sweep.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError

FIGURE_RANK = "accuracy_vs_rank.png"
FIGURE_T = "gain_vs_T.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="run (or resume) an experiment grid (convai2, vision, ...)",
        description="Run the grid methods x seeds (x retraining ranks) of an experiment, "
                    "writing results.jsonl and config.yaml to --out. Re-running the same "
                    "command resumes; a finished grid does no training. For several GPUs: "
                    "accelerate launch -m metanb run ...")
    run.add_argument("experiment", help="the experiment to run (e.g. convai2; an unknown name "
                     "lists the valid ones)")
    run.add_argument("--profile", default="quick",
                     help="preset: quick (offline CPU, default) | colab | paper")
    run.add_argument("--config", type=Path, default=None,
                     help="YAML/JSON file of settings applied on top of the profile")
    run.add_argument("--out", type=Path, default=None,
                     help="run folder (created if missing); optional with --dry-run")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE",
                     help="override a setting, e.g. --set retrain.steps=50 (repeatable)")
    run.add_argument("--seeds", type=int, nargs="+", default=None, help="run seeds")
    run.add_argument("--methods", nargs="+", default=None,
                     help="retraining methods by their registry names (e.g. standard lora-ml); "
                          "an unknown name lists the valid ones")
    run.add_argument("--device", default=None, help="auto | cpu | cuda")
    run.add_argument("--threads", type=int, default=None,
                     help="CPU threads for torch (default: torch's choice; 1 is often faster "
                          "on a busy shared CPU)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--keep-work", action="store_true",
                     help="keep retraining checkpoints and bases under OUT/work when done")
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and the cells to run, then stop")
    run.add_argument("--json", action="store_true",
                     help="with --dry-run: print one JSON object (config, cells, to_run)")
    run.set_defaults(func=_run)

    res = subparsers.add_parser(
        "results", help="summarise a run folder (table + figures)",
        description="Print accuracy (mean ± std over seeds) per method and fine-tuning rank, "
                    "and write the figures as PNG next to the results.")
    res.add_argument("dir", type=Path, help="a run folder, or a folder of run folders (sweep)")
    res.add_argument("--json", action="store_true", help="print JSON instead of a table")
    res.add_argument("--no-plots", action="store_true", help="do not write figures")
    res.set_defaults(func=_results)


def resolve_config(args: argparse.Namespace) -> Any:
    """Profile, then --config file, then flags, then --set overrides (last wins); validated."""
    from metanb.experiments.config import flatten, read_settings
    from metanb.experiments.profiles import load_profile

    config = load_profile(args.profile, args.experiment)
    if args.config is not None:
        config = config.override(flatten(read_settings(args.config)))
    flags: dict[str, Any] = {"experiment": args.experiment}
    if args.seeds is not None:
        flags["seeds"] = args.seeds
    if args.methods is not None:
        flags["retrain.methods"] = args.methods
    if args.device is not None:
        flags["device"] = args.device
    config = config.override(flags).override(args.overrides)
    return config.validate()


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder (it, or a folder above it, is a file)."""
    for path in (out, *out.parents):
        if path.exists():
            if path.is_dir():
                return
            where = "is a file" if path == out else f"is inside {path}, which is a file"
            raise MetanbError(f"--out {out} {where}; give a folder (it is created if missing)")


def check_device(device: str) -> None:
    """Refuse ``cuda`` where torch cannot use it: one line now, not a traceback mid-run.

    A dry run skips this check, so a GPU run can be planned on a machine without one.
    """
    if device != "cuda":
        return
    import torch

    if torch.cuda.is_available():
        return
    why = ("this torch is a CPU-only build" if torch.version.cuda is None
           else "torch sees no CUDA GPU (check the driver and CUDA_VISIBLE_DEVICES)")
    raise MetanbError(f"device is cuda, but {why} (torch {torch.__version__}); "
                      "use --device auto or --device cpu")


def _run(args: argparse.Namespace) -> int:
    from metanb.experiments.results import format_table, summarize
    from metanb.experiments.runner import (
        grid_cells,
        is_main_process,
        plan,
        read_jsonl,
        run_grid,
    )

    config = resolve_config(args)
    if args.out is None and not args.dry_run:
        raise MetanbError("--out is required (a run folder); only --dry-run runs without it")
    if args.out is not None:
        check_out_folder(args.out)
    if args.json and not args.dry_run:
        raise MetanbError("--json goes with --dry-run (a run prints its progress as text)")
    if args.dry_run:
        todo = plan(config, read_jsonl(args.out / "results.jsonl") if args.out else [])
        memory = None
        if config.experiment == "convai2":
            from metanb.experiments.memory import estimate_memory

            memory = estimate_memory(config)
        if args.json:
            print(json.dumps({"config": config.to_dict(), "t4_memory_estimate": memory,
                              "cells": [c.name for c in grid_cells(config)],
                              "to_run": {cell.name: [s.label for s in specs]
                                         for cell, specs in todo}}, indent=2))
            return 0
        print(config.to_yaml(), end="")
        if memory is not None:
            print("# T4 memory estimate of one retraining step: "
                  + ", ".join(f"{k}={v}" for k, v in memory.items()))
        print(f"# {len(grid_cells(config))} cells, {len(todo)} to run: "
              + ", ".join(cell.name for cell, _ in todo))
        return 0
    if args.threads is not None:
        if args.threads < 1:
            raise MetanbError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    check_device(config.device)
    main = is_main_process()  # under accelerate launch / torchrun only rank 0 speaks
    report = run_grid(config, args.out, progress=not args.no_progress and main,
                      keep_work=args.keep_work,
                      log=(lambda m: print(m, file=sys.stderr)) if main else None)
    if not main:
        return 0
    print(f"{len(report.written)} new evaluation(s), {report.skipped} already done; "
          f"results in {args.out / 'results.jsonl'}")
    records = read_jsonl(args.out / "results.jsonl")
    if records:
        print(format_table(summarize(records, config.retrain.methods)))
    return 0


def _results(args: argparse.Namespace) -> int:
    from metanb.experiments.results import find_runs, format_report, report_json, summarize

    runs = find_runs(args.dir)
    print(json.dumps(report_json(runs), indent=2) if args.json else format_report(runs))
    if not args.no_plots:
        summaries = [(run, summarize(run.records, run.config.retrain.methods)) for run in runs]
        for path in _write_figures(args.dir, runs, summaries):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _write_figures(folder: Path, runs: list[Any], summaries: list[Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metanb.experiments.results import describe_run, experiment_setup, gains_by_tasks
    from metanb.plots.results import plot_accuracy_vs_rank, plot_gain_vs_tasks
    from metanb.plots.style import apply_style

    apply_style()
    written = []
    for run, rows in summaries:
        fig, ax = plt.subplots()
        plot_accuracy_vs_rank(rows, ax=ax, caption=describe_run(run),
                              chance=1.0 / experiment_setup(run.config, run.records)["m"])
        written.append(_save_png(fig, run.path / FIGURE_RANK))
    if len({experiment_setup(run.config, run.records)["T"] for run in runs}) > 1:  # over T
        fig, ax = plt.subplots()
        plot_gain_vs_tasks(gains_by_tasks(runs), ax=ax, caption=describe_run(runs))
        written.append(_save_png(fig, folder / FIGURE_T))
    return written


def _save_png(fig: Any, path: Path) -> Path:
    """Render ``fig`` in memory, then write it atomically: a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    from metanb.io import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
