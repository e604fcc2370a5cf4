"""Keep the book's notebook-execution cache only while what the chapters read is unchanged.

Why: with ``execute_notebooks: cache`` jupyter-cache re-runs a notebook when its code cells
change, but not when the package it imports or the committed results it reads change, so its
outputs would go stale silently. ``key`` hashes those inputs; ``make book`` runs ``sync``,
which drops the cache when the key changed, and the book workflow names its actions/cache
entry after the same key.

Usage: python tools/book_cache.py key               print the key of the inputs
       python tools/book_cache.py sync CACHE_DIR    drop CACHE_DIR if its recorded key differs
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("pyproject.toml", "metanb", "book/results")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "work"}  # work/: runs in progress (ignored)
KEY_FILE = "metanb-inputs.key"


def inputs_key(root: Path = ROOT) -> str:
    """sha256 over the relative path and bytes of every input file, in a fixed order."""
    files = []
    for name in INPUTS:
        path = root / name
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in found
                  if not SKIP_PARTS.intersection(p.relative_to(root).parts) and p.suffix != ".pyc"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def sync(cache_dir: Path, root: Path = ROOT) -> bool:
    """Drop ``cache_dir`` unless it was filled from the current inputs; True when dropped."""
    from metanb.io import atomic_write_text

    key, key_file = inputs_key(root), cache_dir / KEY_FILE
    stale = cache_dir.exists() and (not key_file.is_file() or key_file.read_text().strip() != key)
    if stale:
        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, key + "\n")
    return stale


def main(argv: list[str]) -> int:
    if argv == ["key"]:
        print(inputs_key())
        return 0
    if len(argv) == 2 and argv[0] == "sync":
        if sync(Path(argv[1])):
            print(f"book cache: package or results changed, dropped {argv[1]}")
        return 0
    print("usage: python tools/book_cache.py key | sync CACHE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
