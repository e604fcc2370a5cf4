"""What every experiment's config offers the runner, for any nested dataclass of settings.

The runner, the CLI and the results reader handle a config only through these methods
(``from_dict``/``load``, ``to_dict``/``to_yaml``, dotted-key ``override``, ``fingerprint``,
``validate``), and read only its grid axes (``seeds``, ``retrain.methods``, ``retrain.ranks``,
``finetune.ranks``, ``finetune.head``). An experiment's config subclasses :class:`Settings`
and adds its sections and its ``validate``.

Parsing and coercion are :mod:`metanb.experiments.config`'s (one implementation for every
experiment); what is added here is only that the root class is ``type(self)``, not convai2's
:class:`~metanb.experiments.config.ExperimentConfig`, so an unknown key is answered with this
experiment's own keys.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from metanb.errors import MetanbError
from metanb.experiments.config import (
    _build,
    _coerce,
    _field_type,
    _locate,
    _split_assignment,
    read_settings,
)

S = TypeVar("S", bound="Settings")
R = TypeVar("R")

# the grid axes and runtime settings: runs that differ only in these may share a folder
GRID_KEYS = ("profile", "seeds", "device", "retrain.methods", "retrain.ranks",
             "retrain.checkpoint_every", "finetune.ranks", "finetune.head")


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
        """A copy with dotted-key overrides (``["retrain.epochs=5", "seeds=[1,2]"]``), string
        values parsed by the field's type, as :meth:`ExperimentConfig.override`."""
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
