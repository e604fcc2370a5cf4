"""The language-model experiment: typed configs, profiles, the resumable grid runner, results.

``python -m metanb run convai2 --profile quick --out DIR`` runs a grid of (method, seed,
retraining rank) cells; ``python -m metanb results DIR`` summarises it. From Python::

    from metanb.experiments import load_profile, run_grid, load_run, summarize, format_table
    config = load_profile("quick").override({"seeds": [0]})
    run_grid(config, "runs/quick")
    print(format_table(summarize(load_run("runs/quick").records)))

Modules: ``config`` (the typed config), ``profiles`` (quick / colab / paper presets),
``runner`` (grid, resume, atomic results.jsonl), ``pipeline`` (the ConvAI2 stages),
``results`` (summaries and tables), ``cli`` (the two subcommands).
"""

from metanb.experiments.config import METHODS, ExperimentConfig
from metanb.experiments.profiles import choose_profile, load_profile, profile_names
from metanb.experiments.results import (
    format_table,
    load_run,
    paired_gain,
    summarize,
)
from metanb.experiments.runner import run_grid

__all__ = [
    "METHODS",
    "ExperimentConfig",
    "choose_profile",
    "format_table",
    "load_profile",
    "load_run",
    "paired_gain",
    "profile_names",
    "run_grid",
    "summarize",
]
