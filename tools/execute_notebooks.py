"""Execute notebooks in place, top to bottom, so their stored outputs are what nbval checks.

Usage: python tools/execute_notebooks.py PATH [PATH ...]   (files or folders)

Run it through ``make notebooks`` (which sets the offline environment) after editing a
chapter. Each notebook runs in its own folder with the current environment's kernel.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SKIP_PARTS = {".ipynb_checkpoints", "_build", "source", "dist"}


def notebooks(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*.ipynb") if not SKIP_PARTS.intersection(p.parts)
            )
        else:
            found.append(path)
    return found


def execute(path: Path, timeout: int = 1800) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    # an inherited MPLBACKEND=Agg stops ipykernel's inline backend: no figures would be stored
    os.environ.pop("MPLBACKEND", None)
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for path in notebooks(argv):
        print(f"{path}: {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
