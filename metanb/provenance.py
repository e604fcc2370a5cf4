"""Provenance for every stored result: what ran, where, when, from which commit."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``path`` (default: this package's code), or None.

    ``-dirty`` is appended when anything under ``path`` differs from that commit (changed
    tracked files, or files git does not track yet and does not ignore). Only ``path`` counts:
    results files being written elsewhere in the checkout, or edits to the docs, do not change
    the code that produced a result, so they must not mark it dirty.
    """
    where = Path(path).resolve() if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0 or not out.stdout.strip():
            return None
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", str(where)],
            cwd=where, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if changed else "")


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


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A fingerprint of a model's weights: sha256 over every (name, dtype, shape, bytes), in
    sorted name order, so two bases are the same model exactly when their digests agree.

    The records of one grid cell carry it, which is how ``metanb results`` tells whether they
    were all evaluated on one retrained base (a final loss can agree by chance, a digest not).
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu")
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
