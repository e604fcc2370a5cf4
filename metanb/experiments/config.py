"""The typed configuration of a language-model experiment.

One nested dataclass, :class:`ExperimentConfig`, describes a whole run: the model, where the
persona data come from, how tasks are cut, how the base is retrained and how held-out personas
are fine-tuned. It prints, round-trips through YAML/JSON, and is overridden from the command
line with dotted keys (``--set retrain.steps=200``). :meth:`ExperimentConfig.validate` turns
every inconsistent setting into a one-line :class:`~metanb.errors.MetanbError` *before* any
training starts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from metanb.errors import MetanbError
from metanb.retrain.config import DEVICES, RetrainConfig, RetrainSettings
from metanb.retrain.methods import METHODS, missing_heads

DATA_SOURCES: tuple[str, ...] = ("generator", "parlai", "hf")
# how an example is scored: a softmax over its candidates, or each (context, candidate) pair on
# its own by a 2-label classifier (the paper's cross-encoder, hits@1 over the candidates)
TASK_FORMATS: tuple[str, ...] = ("multiple-choice", "cross-encoder")
# what a task is: one persona (split at random per seed), or one of PAML's persona clusters cut
# as the paper does (largest clusters, last dialogues held out; needs a Persona-Chat folder)
TASK_SPLITS: tuple[str, ...] = ("personas", "clusters")
# which retrained base is fine-tuned: the last step's, or the epoch with the best mean
# retraining-validation accuracy (the paper's; needs tasks.split=clusters and retrain.epochs)
RETRAIN_SELECT: tuple[str, ...] = ("last", "validation")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelConfig:
    name: str = field(
        default="tiny-roberta",
        metadata=_help("model for metanb.models.load_model: tiny-roberta | minilm-offline | "
                       "roberta-base | a Hub id or local path"),
    )
    target_modules: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata=_help("names of the Linear layers that carry LoRA adapters (exact names or "
                       "dotted suffixes, as in PEFT)"),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("recompute activations in backward (less memory, about 1/3 more time)"),
    )


@dataclass
class DataConfig:
    source: str = field(
        default="generator",
        metadata=_help("generator (offline persona-chat generator) | parlai (a ParlAI text "
                       "file, see path) | hf (a Hugging Face dataset, see hf_name)"),
    )
    path: str | None = field(
        default=None,
        metadata=_help("source=parlai: a ParlAI file ('sample' = the sample shipped in "
                       "metanb/data/samples/), or for tasks.split=clusters a Persona-Chat "
                       "folder (train/valid_self_original.txt + train/valid_persona_map; "
                       "python -m metanb data download --out FOLDER)"),
    )
    hf_name: str | None = field(default=None, metadata=_help("Hub dataset for source=hf"))
    hf_split: str = field(default="train", metadata=_help("split of the Hub dataset"))
    personas: int = field(default=40, metadata=_help("generator: personas to generate"))
    dialogues_per_persona: int = field(
        default=8, metadata=_help("generator: dialogues per persona")
    )
    seed: int = field(
        default=0,
        metadata=_help("seed of the data set itself (generator); fixed across run seeds, "
                       "which vary the persona split, initialisation and training"),
    )
    distractors: str = field(
        default="same-slot",
        metadata=_help("generator: same-slot (distractors answer the same question with other "
                       "personas' values) | random (other personas' replies, as in ConvAI2)"),
    )
    include_persona: bool = field(
        default=False,
        metadata=_help("put the persona's profile text in the input (the paper does not: "
                       "the model must learn the persona)"),
    )


@dataclass
class TaskConfig:
    retrain: int = field(
        default=16,
        metadata=_help("T: number of retraining tasks (personas, or the largest train clusters)"))
    heldout: int = field(
        default=8, metadata=_help("new tasks (held-out personas, or the largest valid clusters)"))
    support: int = field(
        default=8,
        metadata=_help("split=personas: n, support examples per held-out persona for fine-tuning "
                       "(taken by whole dialogues, so possibly a few more); the rest is the "
                       "query set"),
    )
    candidates: int = field(default=20, metadata=_help("m: candidate utterances per example"))
    max_length: int | None = field(
        default=64,
        metadata=_help("tokens per (history, candidate) pair; none = no truncation (the "
                       "paper's; cross-encoder only)"))
    format: str = field(
        default="multiple-choice",
        metadata=_help("multiple-choice (one softmax over the candidates) | cross-encoder (the "
                       "paper's: a 2-label sequence classifier scores each pair, hits@1)"))
    split: str = field(
        default="personas",
        metadata=_help("personas (a task is one persona, split at random per seed) | clusters "
                       "(the paper's: PAML's persona clusters from a Persona-Chat folder)"))
    nested: bool = field(
        default=False,
        metadata=_help("split=personas: draw the held-out personas first, so for one seed they "
                       "are the same for every tasks.retrain and a smaller T's retraining "
                       "personas are a subset of a larger T's (a nested T sweep)"))
    validation_dialogues: int = field(
        default=3,
        metadata=_help("split=clusters: last dialogues of each retraining cluster held out for "
                       "retraining validation (the paper's 3)"))
    query_dialogues: int = field(
        default=2,
        metadata=_help("split=clusters: last dialogues of each new cluster held out as its "
                       "query set; the rest is its support set (the paper's 2)"))


@dataclass
class PretrainConfig:
    steps: int = field(
        default=0,
        metadata=_help("steps of a short standard training of a random-init model on pooled "
                       "data of separate personas, shared by every method; 0 = none (use it "
                       "only for models that start untrained)"),
    )
    personas: int = field(
        default=40, metadata=_help("generator personas used for pretraining (disjoint seed)")
    )
    lr: float = field(default=1e-3, metadata=_help("pretraining learning rate"))
    batch_size: int = field(default=16, metadata=_help("pretraining batch size"))


@dataclass(frozen=True)
class RetrainGridConfig(RetrainSettings):
    """The retraining section: the loop's own settings (:class:`metanb.retrain.RetrainSettings`,
    embedded field by field, so every ``retrain()`` option is a ``--set retrain.<name>`` key),
    plus the grid axes and the batching of this experiment."""

    methods: list[str] = field(
        default_factory=lambda: ["standard", "lora-ml"],
        metadata=_help("retraining methods, from metanb.retrain's registry (standard = SR, "
                       "lora-ml, reptile, ...)"),
    )
    ranks: list[int] = field(
        default_factory=lambda: [8],
        metadata=_help("LoRA rank(s) of the per-task adapters during retraining (a grid axis)"),
    )
    batch_size: int = field(default=8, metadata=_help("examples per task batch"))
    checkpoint_every: int = field(
        default=50, metadata=_help("steps between resumable retraining checkpoints")
    )
    epochs: int | None = field(
        default=None,
        metadata=_help("schedule in epochs (replaces steps): an epoch is every retraining "
                       "batch once (SR, LoRA-ML, last-layer-ML: ceil(batches / tasks per "
                       "step) steps) or every task once (Reptile: ceil(T / tasks per step))"))
    select: str = field(
        default="last",
        metadata=_help("last (the final base) | validation (the epoch with the best mean "
                       "retraining-validation accuracy, as the paper keeps; needs "
                       "tasks.split=clusters and retrain.epochs)"))

    def run_config(self, method: str, rank: int, target_modules: Sequence[str], seed: int,
                   device: str) -> RetrainConfig:
        """The :class:`metanb.retrain.RetrainConfig` of one cell: these settings, no copying."""
        return RetrainConfig(**self.settings(), method=method, r=rank,
                             target_modules=tuple(target_modules), seed=seed, device=device)


@dataclass
class FinetuneConfig:
    ranks: list[int] = field(
        default_factory=lambda: [1, 4, 8, 16],
        metadata=_help("LoRA ranks for fine-tuning a held-out persona (rank 0, no fine-tuning, "
                       "is always evaluated as a reference)"),
    )
    head: bool = field(default=True, metadata=_help("also fine-tune the last layer only"))
    steps: int = field(default=50, metadata=_help("fine-tuning steps per held-out persona"))
    epochs: int | None = field(
        default=None,
        metadata=_help("schedule in epochs over a new task's support batches (replaces "
                       "steps); the query set is scored after every epoch: records carry "
                       "accuracy (last epoch) and accuracy_best (best epoch per task)"))
    fresh_head: bool = field(
        default=False,
        metadata=_help("discard the retrained head: a fresh (re-initialised) head per new task, "
                       "trained with the LoRA adapter too (the paper's)"))
    head_module: str | None = field(
        default=None,
        metadata=_help("the head module (fresh_head, head-only fine-tuning): e.g. classifier; "
                       "none = the last Linear layer"))
    lora_alpha: float | None = field(
        default=None, metadata=_help("fine-tuning adapters' alpha (none = 2 r)"))
    lora_dropout: float = field(default=0.0, metadata=_help("fine-tuning adapters' dropout"))
    weight_decay: float = field(default=0.0, metadata=_help("fine-tuning AdamW weight decay"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("fine-tuning gradient clipping (none = no clipping)"))
    match_retrain_rank: bool = field(
        default=False,
        metadata=_help("the paper's sweep: fine-tuning ranks = retrain.ranks (finetune.ranks "
                       "unused), a base retrained at rank r fine-tuned at rank r only, bases "
                       "without adapters at every rank. false = every base at every "
                       "finetune.ranks (our decoupled question)"))
    lr: float = field(default=1e-3, metadata=_help("fine-tuning learning rate"))
    schedule_stretch: float = field(
        default=1.0,
        metadata=_help("the linear schedule decays towards 0 at stretch x the fine-tuning "
                       "steps (1: 0 at the last step; > 1 stops short of 0, the official "
                       "--sm)"))
    batch_size: int = field(default=8, metadata=_help("fine-tuning batch size"))
    eval_batch_size: int = field(default=32, metadata=_help("evaluation batch size"))


S = TypeVar("S", bound="Settings")
R = TypeVar("R")

# the grid axes and runtime settings: runs that differ only in these may share a folder
GRID_KEYS = ("profile", "seeds", "device", "retrain.methods", "retrain.ranks",
             "retrain.checkpoint_every", "finetune.ranks", "finetune.head",
             "finetune.match_retrain_rank")


def setting_keys(cls: type) -> dict[str, str]:
    """Every dotted key of the settings class ``cls``, with its help text."""
    out: dict[str, str] = {}

    def walk(kind: type, prefix: str) -> None:
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = f.metadata.get("help", "")

    walk(cls, "")
    return out


def _own_keys(cls: type, action: Callable[[], R]) -> R:
    """Run ``action``; an unknown-key error is re-worded with ``cls``'s keys as the hint."""
    try:
        return action()
    except MetanbError as exc:
        found = re.match(r"unknown config key '([^']*)'", str(exc))
        if found is None:
            raise
        key = found.group(1)
        keys = setting_keys(cls)
        near = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
        hint = f"did you mean {', '.join(near)}?" if near else "valid keys: " + ", ".join(keys)
        raise MetanbError(f"unknown config key {key!r}; {hint}") from None


class Settings:
    """Mixin for an experiment's root config dataclass (see the module docstring)."""

    experiment: str
    seeds: list[int]
    device: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], raw: dict[str, Any]) -> S:
        """Build from a (possibly partial) nested dict; unknown keys are errors."""
        return _own_keys(cls, lambda: _build(cls, raw, prefix=""))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write YAML (or JSON when the name ends in .json)."""
        from metanb.io import atomic_write_text

        path = Path(path)
        return atomic_write_text(path, self.to_json() if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls: type[S], path: str | Path) -> S:
        return cls.from_dict(read_settings(path))

    def override(self: S, assignments: list[str] | dict[str, Any]) -> S:
        """A copy with dotted-key overrides (``["retrain.epochs=5", "seeds=[1,2]"]``).

        String values are parsed by the field's type (``1e-4`` is a float, ``[1,4]`` or
        ``1,4`` a list, ``none`` is None), so the command line needs no quoting tricks.
        """
        cls = type(self)
        items = (list(assignments.items()) if isinstance(assignments, dict)
                 else [_split_assignment(a) for a in assignments])
        raw = self.to_dict()
        for key, value in items:
            section, name = _own_keys(cls, lambda key=key: _locate(raw, key))
            kind = _field_type(cls, key)
            section[name] = _coerce(value, kind, key) if isinstance(value, str) else value
        return cls.from_dict(raw)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change results: everything but :data:`GRID_KEYS`."""
        raw = self.to_dict()
        for key in GRID_KEYS:
            *path, name = key.split(".")
            section = raw
            for part in path:
                section = section.get(part, {})
            section.pop(name, None)
        return raw

    def validate(self: S) -> S:  # pragma: no cover - every experiment overrides it
        raise NotImplementedError

    def check_inputs(self) -> None:
        """Refuse, before a run writes anything, inputs that are not there (data files): the
        runner calls it first, so a bad path leaves no half-made run folder behind. Settings
        are checked by :meth:`validate`; this default has no files to check."""


@dataclass
class ExperimentConfig(Settings):
    experiment: str = field(default="convai2", metadata=_help("experiment name"))
    profile: str | None = field(default=None, metadata=_help("profile this config came from"))
    seeds: list[int] = field(default_factory=lambda: [0], metadata=_help("run seeds (grid axis)"))
    device: str = field(
        default="auto",
        metadata=_help("auto (GPU if any; each process's own under accelerate launch) | cpu | "
                       "cuda"),
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    retrain: RetrainGridConfig = field(default_factory=RetrainGridConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    # ---- validation --------------------------------------------------------------------
    def check_inputs(self) -> None:
        """The data files this run will read exist (a Persona-Chat folder for
        ``tasks.split=clusters``, a ParlAI text file for ``data.source=parlai``)."""
        from metanb.data.persona_chat import check_persona_chat_folder

        d = self.data
        if self.tasks.split == "clusters":
            check_persona_chat_folder(Path(d.path or ""))
        elif d.source == "parlai" and d.path != "sample":
            path = Path(d.path or "")
            if path.is_dir():
                raise MetanbError(f"data.path {path} is a folder; a Persona-Chat folder is read "
                                  "with tasks.split=clusters, otherwise give a ParlAI text file")
            if not path.is_file():
                raise MetanbError(f"data.path {path} does not exist; give a ParlAI text file "
                                  "(python -m metanb data download --out FOLDER fetches them)")

    def validate(self) -> ExperimentConfig:
        """Raise a one-line MetanbError for the first inconsistent setting; return self."""
        t, r, f, d = self.tasks, self.retrain, self.finetune, self.data
        from metanb.experiments.grid import EXPERIMENTS

        if self.experiment not in EXPERIMENTS:
            raise MetanbError(f"unknown experiment {self.experiment!r}; choose from "
                              + ", ".join(EXPERIMENTS))
        if not r.methods:
            raise MetanbError("retrain.methods is empty; list at least one of "
                              + ", ".join(METHODS))
        for method in r.methods:
            if method not in METHODS:
                raise MetanbError(f"unknown method {method!r} in retrain.methods; "
                                  f"choose from {', '.join(METHODS)}")
        for method in r.methods:
            problem = missing_heads(METHODS[method], r.task_heads)
            if problem:
                raise MetanbError(problem.replace("task_heads", "retrain.task_heads", 1))
        problems = r.problems(prefix="retrain.")
        if problems:
            raise MetanbError(problems[0])
        _no_duplicates(r.methods, "retrain.methods")
        if not r.ranks:
            raise MetanbError("retrain.ranks is empty; give at least one LoRA rank, e.g. [8]")
        if not f.ranks and not f.head:
            raise MetanbError("finetune.ranks is empty and finetune.head is false: nothing to "
                              "fine-tune; give ranks such as [1, 4, 8, 16] or set head=true")
        for key, ranks in (("retrain.ranks", r.ranks), ("finetune.ranks", f.ranks)):
            _no_duplicates(ranks, key)
            for rank in ranks:
                if rank < 1:
                    raise MetanbError(f"{key} holds {rank}; LoRA ranks are >= 1 (rank 0, no "
                                      "fine-tuning, is always evaluated)")
        if not self.seeds:
            raise MetanbError("seeds is empty; give at least one seed, e.g. [0]")
        _no_duplicates(self.seeds, "seeds")
        if d.source not in DATA_SOURCES:
            raise MetanbError(f"unknown data.source {d.source!r}; choose from "
                              + ", ".join(DATA_SOURCES))
        if d.source == "parlai" and not d.path:
            raise MetanbError("data.source=parlai needs data.path (a ParlAI file, or 'sample')")
        if d.source == "hf" and not d.hf_name:
            raise MetanbError("data.source=hf needs data.hf_name (a Hub dataset name)")
        if self.device not in DEVICES:
            raise MetanbError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}"
                              " (accelerate places each process on its GPU)")
        positive = {
            "tasks.retrain": t.retrain, "tasks.heldout": t.heldout, "tasks.support": t.support,
            "tasks.max_length": 1 if t.max_length is None else t.max_length,
            "tasks.validation_dialogues": t.validation_dialogues,
            "tasks.query_dialogues": t.query_dialogues,
            "retrain.epochs": 1 if r.epochs is None else r.epochs,
            "finetune.epochs": 1 if f.epochs is None else f.epochs,
            "retrain.batch_size": r.batch_size, "retrain.checkpoint_every": r.checkpoint_every,
            "finetune.batch_size": f.batch_size, "finetune.eval_batch_size": f.eval_batch_size,
            "data.personas": d.personas, "data.dialogues_per_persona": d.dialogues_per_persona,
        }
        for key, value in positive.items():
            if value < 1:
                raise MetanbError(f"{key} must be >= 1, got {value}")
        if t.candidates < 2:
            raise MetanbError(f"tasks.candidates must be >= 2 (a choice), got {t.candidates}")
        for key, value in (("finetune.steps", f.steps), ("pretrain.steps", self.pretrain.steps)):
            if value < 0:
                raise MetanbError(f"{key} must be >= 0, got {value}")
        for key, value in (("finetune.lr", f.lr), ("pretrain.lr", self.pretrain.lr)):
            if not value > 0:
                raise MetanbError(f"{key} must be > 0, got {value}")
        if d.source == "generator":
            check_persona_count(t.retrain, t.heldout, d.personas, "the generator (data.personas)")
        self._validate_design()
        if not self.model.target_modules:
            raise MetanbError("model.target_modules is empty; name the Linear layers for LoRA, "
                              "e.g. [query, value]")
        return self

    def _validate_design(self) -> None:
        """The checks of the paper's design choices (format, clusters, selection, ranks)."""
        t, r, f, d = self.tasks, self.retrain, self.finetune, self.data
        for key, value, choices in (("tasks.format", t.format, TASK_FORMATS),
                                    ("tasks.split", t.split, TASK_SPLITS),
                                    ("retrain.select", r.select, RETRAIN_SELECT)):
            if value not in choices:
                raise MetanbError(f"unknown {key} {value!r}; choose from {', '.join(choices)}")
        if t.max_length is None and t.format != "cross-encoder":
            raise MetanbError("tasks.max_length=none (no truncation) needs "
                              "tasks.format=cross-encoder; give a length, e.g. 64")
        if t.split == "clusters" and (d.source != "parlai" or not d.path or d.path == "sample"):
            raise MetanbError("tasks.split=clusters needs data.source=parlai and data.path = a "
                              "Persona-Chat folder (python -m metanb data download --out FOLDER)")
        if t.nested and t.split != "personas":
            raise MetanbError("tasks.nested=true needs tasks.split=personas (the cluster cut is "
                              "already the same for every seed)")
        if r.select == "validation" and (t.split != "clusters" or r.epochs is None):
            raise MetanbError("retrain.select=validation needs tasks.split=clusters (the "
                              "retraining validation dialogues) and retrain.epochs (one score "
                              "per epoch)")
        if not 0.0 <= f.lora_dropout < 1.0:
            raise MetanbError(f"finetune.lora_dropout must be in [0, 1), got {f.lora_dropout}")
        if f.weight_decay < 0 or (f.max_grad_norm is not None and not f.max_grad_norm > 0):
            raise MetanbError("finetune.weight_decay must be >= 0 and finetune.max_grad_norm "
                              f"> 0 or none, got {f.weight_decay} and {f.max_grad_norm}")
        if t.format == "cross-encoder" and d.include_persona:
            raise MetanbError("data.include_persona needs tasks.format=multiple-choice (the "
                              "paper's cross-encoder never sees the persona)")
        if f.lora_alpha is not None and not f.lora_alpha > 0:
            raise MetanbError(f"finetune.lora_alpha must be > 0 or none, got {f.lora_alpha}")
        if not f.schedule_stretch >= 1.0:
            raise MetanbError(f"finetune.schedule_stretch must be >= 1, got {f.schedule_stretch}")


def read_settings(path: str | Path) -> dict[str, Any]:
    """The nested mapping of settings in a YAML/JSON file (possibly partial)."""
    path = Path(path)
    if not path.is_file():
        raise MetanbError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MetanbError(f"config file {path} is not valid YAML/JSON: {first}") from None
    if not isinstance(raw, dict):
        raise MetanbError(f"config file {path} must hold a mapping of settings")
    return raw


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings -> dotted keys, the form :meth:`ExperimentConfig.override` takes."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_persona_count(retrain: int, heldout: int, available: int, where: str) -> None:
    """One message for 'asked for more personas than the data hold' (config and data time)."""
    if retrain + heldout > available:
        raise MetanbError(
            f"tasks.retrain={retrain} + tasks.heldout={heldout} personas needed but {where} "
            f"has only {available}; lower T / held-out personas or use more data")


def config_keys() -> dict[str, str]:
    """Every dotted key ``--set`` accepts, with its help text (for the CLI's error messages)."""
    return setting_keys(ExperimentConfig)


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested dicts: ``key: a != b``."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out


# ---- internals ---------------------------------------------------------------------------

def _no_duplicates(values: list[Any], key: str) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise MetanbError(f"{key} lists {seen[0]!r} twice; list each value once")


def _split_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise MetanbError(f"override {text!r} is not key=value (e.g. retrain.steps=100)")
    return key.strip(), value.strip()


def _locate(raw: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    *path, name = key.split(".")
    section = raw
    for part in path:
        if not isinstance(section.get(part), dict):
            raise _unknown_key(key)
        section = section[part]
    if name not in section or isinstance(section[name], dict):
        raise _unknown_key(key)
    return section, name


def _unknown_key(key: str) -> MetanbError:
    keys = config_keys()
    near = [k for k in keys if k.endswith("." + key.split(".")[-1]) or k == key.split(".")[-1]]
    hint = f"did you mean {', '.join(near)}?" if near else "valid keys: " + ", ".join(keys)
    return MetanbError(f"unknown config key {key!r}; {hint}")


def _field_type(cls: type, key: str) -> Any:
    *path, name = key.split(".")
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[name]


def _unwrap_optional(kind: Any) -> tuple[Any, bool]:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert a parsed value (or a command-line string) to the field's declared type."""
    kind, optional = _unwrap_optional(kind)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
        if optional:
            return None
        raise MetanbError(f"{key} cannot be none")
    origin = typing.get_origin(kind)
    try:
        if origin is list:
            (item,) = typing.get_args(kind)
            if isinstance(value, str):
                text = value.strip()
                parsed = yaml.safe_load(text) if text.startswith("[") else (
                    [] if not text else text.split(","))
                value = parsed
            if not isinstance(value, list | tuple):
                value = [value]
            return [_coerce(v.strip() if isinstance(v, str) else v, item, key) for v in value]
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if isinstance(value, dict | list):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, yaml.YAMLError):
        name = getattr(kind, "__name__", str(kind))
        if origin is list:
            name = f"list of {typing.get_args(kind)[0].__name__}"
        raise MetanbError(f"{key}={value!r} is not a valid {name}") from None
    raise TypeError(f"unsupported config field type {kind!r} for {key}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise MetanbError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise _unknown_key(prefix + unknown[0])
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, prefix + name)
    return cls(**kwargs)
