"""Profiles: the same experiment at three scales, as YAML presets of :class:`ExperimentConfig`.

``quick`` runs offline on a CPU in minutes (tiny RoBERTa + generated personas), ``colab`` is a
real reproduction on one free-tier GPU (``roberta-base`` + ConvAI2 from the Hub), ``paper`` is
the paper's scale. The YAML files live in ``metanb/experiments/profiles/`` (package data) and
hold only what differs from the dataclass defaults.
"""

from __future__ import annotations

from importlib import resources

import yaml

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig

PROFILE_PACKAGE = "metanb.experiments"


def profile_names() -> list[str]:
    """The shipped profiles, e.g. ``['colab', 'paper', 'quick']``."""
    folder = resources.files(PROFILE_PACKAGE).joinpath("profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name: str) -> ExperimentConfig:
    """The config of a shipped profile (validated), ``profile`` field set to its name."""
    names = profile_names()
    if name not in names:
        raise MetanbError(f"unknown profile {name!r}; choose from {', '.join(names)}")
    text = resources.files(PROFILE_PACKAGE).joinpath("profiles").joinpath(f"{name}.yaml").read_text(
        encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    raw["profile"] = name
    return ExperimentConfig.from_dict(raw).validate()


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
