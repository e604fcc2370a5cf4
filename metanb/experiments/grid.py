"""The grid's vocabulary, shared by the runner and every experiment module.

A *cell* is one retraining run, ``(method, seed, retraining rank)``; it produces one base model
that is evaluated under each :class:`FinetuneSpec` (rank 0 = as is, LoRA at a rank, or the last
layer). An *experiment* (``convai2``, ``vision``) is one module that supplies a config class
(:class:`metanb.experiments.schema.Settings`' interface), profiles and a cell function:
``cell_fn(cell, specs, ctx)`` yields one :class:`CellResult` per spec. The runner
(:mod:`metanb.experiments.runner`) knows only these types, so adding an experiment is one new
module, its profile YAMLs, and one entry in :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from metanb.errors import MetanbError
from metanb.retrain.methods import get_method

if TYPE_CHECKING:
    from metanb.experiments.config import ExperimentConfig

@dataclass(frozen=True)
class Experiment:
    """Where an experiment lives, as import paths (imported only when that experiment runs)."""

    cell: str      # "module:function", its cell function
    config: str    # "module:class", its root config (metanb.experiments.schema's interface)
    profiles: str  # the folder of its profile YAMLs, inside metanb/experiments/


EXPERIMENTS: dict[str, Experiment] = {
    "convai2": Experiment("metanb.experiments.pipeline:convai2_cell",
                          "metanb.experiments.config:ExperimentConfig", "profiles"),
    "vision": Experiment("metanb.experiments.vision:vision_cell",
                         "metanb.experiments.vision:VisionConfig", "profiles/vision"),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise MetanbError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def experiment_cell(name: str) -> CellFunction:
    """The cell function of experiment ``name``."""
    return _resolve(get_experiment(name).cell)


def config_class(name: str) -> Any:
    """The root config class of experiment ``name``."""
    return _resolve(get_experiment(name).config)


def load_experiment_config(path: str | Path) -> Any:
    """A run's config file, read by the class of the experiment it names (convai2 if none)."""
    from metanb.experiments.config import read_settings

    raw = read_settings(path)
    name = raw.get("experiment", "convai2")
    return config_class(str(name)).from_dict(raw)


# ---- cells and specs ---------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Cell:
    """One retraining run. ``retrain_rank`` is None for methods that use no adapters (SR)."""

    seed: int
    method: str
    retrain_rank: int | None

    @property
    def name(self) -> str:
        rank = "" if self.retrain_rank is None else f"-r{self.retrain_rank}"
        return f"{self.method}{rank}-seed{self.seed}"


@dataclass(frozen=True)
class FinetuneSpec:
    """How a held-out persona is adapted: ``none`` (rank 0), ``lora`` at a rank, or ``head``."""

    kind: str
    rank: int = 0

    @property
    def label(self) -> str:
        """The column name in tables: ``0``, ``4``, ``head``."""
        return "head" if self.kind == "head" else str(self.rank)


NO_FINETUNE = FinetuneSpec("none", 0)
HEAD = FinetuneSpec("head", 0)


def grid_cells(config: ExperimentConfig) -> list[Cell]:
    """Every cell, seed-major (per-seed caches are reused by the cells that follow)."""
    cells: list[Cell] = []
    for seed in config.seeds:
        for method in config.retrain.methods:
            ranks: list[int | None] = (
                [None] if get_method(method).rankless else list(config.retrain.ranks))
            cells += [Cell(seed, method, rank) for rank in ranks]
    return cells


def finetune_specs(config: ExperimentConfig, cell: Cell | None = None) -> list[FinetuneSpec]:
    """Rank 0 (no fine-tuning) first, then each LoRA rank, then the last layer if asked.

    With ``finetune.match_retrain_rank`` (the paper's sweep) the ranks are
    ``retrain.ranks``: a cell retrained at rank r is fine-tuned at rank r only, cells without
    adapters at every one of them.
    """
    ranks = list(config.finetune.ranks)
    if config.finetune.match_retrain_rank:
        ranks = list(config.retrain.ranks)
        if cell is not None and cell.retrain_rank is not None:
            ranks = [cell.retrain_rank]
    specs = [NO_FINETUNE] + [FinetuneSpec("lora", r) for r in ranks]
    return specs + ([HEAD] if config.finetune.head else [])


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a record in a run: (method, seed, retraining rank, fine-tuning label)."""
    return (record["method"], record["seed"], record["retrain_rank"], record["finetune"])


def cell_key(cell: Cell, spec: FinetuneSpec) -> tuple[Any, ...]:
    return (cell.method, cell.seed, cell.retrain_rank, spec.label)


# ---- what a cell function receives and yields ------------------------------------------------

@dataclass
class CellContext:
    """Everything a cell function may use besides the cell itself."""

    config: ExperimentConfig
    workdir: Path          # this cell's scratch folder: retraining checkpoint, saved base
    shared_dir: Path       # the run's scratch folder: per-seed caches (e.g. pretraining)
    cache: dict[str, Any]  # in-memory objects shared by the cells of one invocation
    progress: bool = True
    is_main: bool = True


@dataclass
class CellResult:
    """One evaluation of one cell: accuracy on each held-out persona after one spec."""

    spec: FinetuneSpec
    accuracy_per_persona: dict[str, float]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class CellFunction(Protocol):
    def __call__(
        self, cell: Cell, specs: list[FinetuneSpec], ctx: CellContext
    ) -> Iterable[CellResult]: ...


