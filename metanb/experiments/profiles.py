"""Profiles: the same experiment at three scales, as YAML presets of :class:`ExperimentConfig`.

``quick`` runs offline on a CPU in minutes (tiny RoBERTa + generated personas), ``paper`` is
the paper's experiment as its official code runs it (``roberta-base`` cross-encoder on
Persona-Chat's persona clusters; each setting cites the official script), ``colab`` is that
design shrunk for one free T4 in under an hour (Persona-Chat from the Hub). The YAML files
live in ``metanb/experiments/profiles/`` (package data) and
hold only what differs from the dataclass defaults; another experiment's profiles live in its
own folder (``profiles/vision/``, see :data:`metanb.experiments.grid.EXPERIMENTS`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from metanb.errors import MetanbError

PROFILE_PACKAGE = "metanb.experiments"


def _profile_folder(experiment: str) -> Any:
    from metanb.experiments.grid import get_experiment

    folder = resources.files(PROFILE_PACKAGE)
    for part in get_experiment(experiment).profiles.split("/"):
        folder = folder.joinpath(part)
    return folder


def profile_names(experiment: str = "convai2") -> list[str]:
    """The shipped profiles of an experiment, e.g. ``['colab', 'paper', 'quick']``."""
    return sorted(p.name[:-5] for p in _profile_folder(experiment).iterdir()
                  if p.name.endswith(".yaml"))


def load_profile(name: str, experiment: str = "convai2") -> Any:
    """The config of a shipped profile of ``experiment`` (validated), ``profile`` set to its
    name; convai2's are :class:`ExperimentConfig`, another experiment's its own config class."""
    from metanb.experiments.grid import config_class

    names = profile_names(experiment)
    if name not in names:
        raise MetanbError(f"unknown profile {name!r} of {experiment}; choose from "
                          f"{', '.join(names)}")
    text = _profile_folder(experiment).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    raw["profile"] = name
    raw.setdefault("experiment", experiment)
    return config_class(experiment).from_dict(raw).validate()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub can be reached (False when HF_HUB_OFFLINE is set)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def choose_profile() -> str:
    """``colab`` on a CUDA GPU with the Hub reachable, else ``quick`` (what chapter 5 runs)."""
    import torch

    return "colab" if torch.cuda.is_available() and hub_reachable() else "quick"
