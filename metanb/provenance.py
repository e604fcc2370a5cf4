"""Provenance for every stored result: what ran, where, when, from which commit."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``path`` (default: this package), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    # dirty: tracked changes anywhere, or code of this package that git does not track yet
    package = Path(__file__).resolve().parent
    tracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where, capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--", str(package)],
        cwd=package, capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return commit + ("-dirty" if tracked or untracked else "")


def device_description(device: str | torch.device | None = None) -> str:
    """A human-readable name for the device results were computed on."""
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    return f"cpu:{cpu} ({torch.get_num_threads()} threads)"


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """Package version, git commit, device, library versions and UTC time, as a JSON-able dict."""
    from metanb import __version__

    info: dict[str, Any] = {
        "metanb_version": __version__,
        "git_commit": git_commit(),
        "device": device_description(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for name in ("transformers", "peft", "accelerate"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            info[name] = None
    return info
