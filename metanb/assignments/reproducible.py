"""Make what ``otter assign`` writes the same bytes on every build, on every machine.

otter gives each cell it writes a random id and stamps every member of the autograder zip with
the build time, so rebuilding unchanged sources would rewrite the committed student notebooks
(and the zips) with a noisy diff. Cell ids here are derived from the cell's content, and the zip
is repacked with its members in name order under one fixed timestamp.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from pathlib import Path

import nbformat

from metanb.io import atomic_write_bytes, atomic_write_text

# the earliest time a zip can hold; any constant would do
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3  # ZipInfo.create_system on POSIX; fixed so a build on Windows gives the same bytes


def content_cell_id(cell_type: str, source: str, taken: set[str]) -> str:
    """An 8-hex-digit id from the cell's type and text, unique among ``taken`` (then added).

    Content, not position: inserting a cell leaves every other cell's id as it was.
    """
    for attempt in itertools.count():
        salt = f"\0{attempt}" if attempt else ""  # a repeated cell (or a collision): next salt
        cell_id = hashlib.sha256(f"{cell_type}\0{source}{salt}".encode()).hexdigest()[:8]
        if cell_id not in taken:
            taken.add(cell_id)
            return cell_id
    raise AssertionError("unreachable")  # itertools.count never ends


def stabilize_cell_ids(notebook: Path) -> None:
    """Rewrite ``notebook`` in place with content-derived cell ids (nothing else changes)."""
    nb = nbformat.read(notebook, as_version=nbformat.NO_CONVERT)
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        return  # cell ids exist from nbformat 4.5 on
    taken: set[str] = set()
    for cell in nb.cells:
        cell["id"] = content_cell_id(cell.cell_type, cell.source, taken)
    atomic_write_text(notebook, nbformat.writes(nb) + "\n")  # as nbformat.write ends a file


def repack_zip(source: Path, dest: Path) -> None:
    """Copy the zip ``source`` to ``dest`` with members sorted by name and one fixed timestamp.

    Each member keeps its bytes, compression and permission bits.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(buffer, "w") as new:
        for info in sorted(old.infolist(), key=lambda i: i.filename):
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            fixed.create_system = _UNIX
            new.writestr(fixed, old.read(info))
    atomic_write_bytes(dest, buffer.getvalue())
