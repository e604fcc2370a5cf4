"""Build the course assignments: source notebooks -> student notebooks + autograder zips.

A *source* notebook (``book/assignments/source/<name>.ipynb``) is written in otter-grader's
``otter assign`` format: solutions between ``# BEGIN SOLUTION`` / ``# END SOLUTION`` and public
and ``# HIDDEN`` tests inside each question. ``otter assign`` turns it into

- ``<out>/<name>/student/<name>.ipynb``: what students get (no solutions, public tests only);
- ``<out>/<name>/autograder/<name>.ipynb``: the solutions, every test in its metadata;
- ``<out>/<name>/autograder/<name>-autograder.zip``: what ``otter run`` / Gradescope grade with.

The student notebooks are also copied next to the sources' parent folder (``book/assignments/``),
where the book shows them. Everything runs offline: otter is called through its Python API.
A rebuild of unchanged sources writes the same bytes (see :mod:`metanb.assignments.reproducible`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from metanb.assignments.reproducible import repack_zip, stabilize_cell_ids
from metanb.errors import MetanbError
from metanb.io import atomic_write_bytes

INSTALL_HINT = "pip install 'metanb[assign]'"
SOURCE_SUBDIR = Path("book") / "assignments" / "source"
DEFAULT_OUT_SUBDIR = Path("book") / "assignments" / "dist"


@dataclass(frozen=True)
class BuiltAssignment:
    """Where one built assignment landed and how many autograded points it carries."""

    name: str
    student_notebook: Path
    solution_notebook: Path
    autograder_zip: Path
    points: dict[str, float]

    @property
    def total_points(self) -> float:
        return float(sum(self.points.values()))


def require_otter() -> ModuleType:
    """Import otter-grader, or say in one line how to install it (it is an optional extra)."""
    try:
        import otter.assign
    except ImportError as exc:
        raise MetanbError(f"otter-grader is not installed ({exc}); run: {INSTALL_HINT}") from None
    return otter


def repository_root() -> Path:
    """The folder holding ``book/assignments/source``: the current one, else the package's repo.

    The sources ship with the repository, not the wheel, so an installed package run outside a
    checkout has no default sources (``--source`` names them then).
    """
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / SOURCE_SUBDIR).is_dir():
            return root
    return Path.cwd()


def find_sources(source_dir: Path) -> list[Path]:
    """The assignment source notebooks in ``source_dir``, in name order (a1_, a2_, ...)."""
    if not source_dir.is_dir():
        raise MetanbError(
            f"no assignment sources at {source_dir}: run from the repository root "
            "or pass --source DIR"
        )
    sources = sorted(p for p in source_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not sources:
        raise MetanbError(f"no .ipynb source notebooks in {source_dir}")
    return sources


def question_points(notebook: Path) -> dict[str, float]:
    """Points per autograded question, read from the tests otter stored in ``notebook``."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    nb = json.loads(notebook.read_text(encoding="utf-8"))
    config = NBMetadataConfig(nb.get("metadata", {}).get("otter", {}))
    return {
        name: float(create_test_file(str(notebook), config, name).possible)
        for name in sorted(config.tests)
    }


def build_assignment(source: Path, out_dir: Path, *, run_tests: bool = True) -> BuiltAssignment:
    """Run ``otter assign`` on one source notebook into ``out_dir/<name>/``.

    With ``run_tests`` otter grades the solution notebook with every test (hidden included) and
    the build fails unless it scores full marks: a broken source never reaches students.
    """
    otter = require_otter()
    import yaml
    from otter.assign.utils import AssignNotebookFormatException

    source = Path(source).resolve()
    if not source.is_file():
        raise MetanbError(f"assignment source not found: {source}")
    result = Path(out_dir).resolve() / source.stem
    cwd = os.getcwd()
    try:
        otter.assign.main(str(source), str(result), no_pdfs=True, no_run_tests=not run_tests)
    except RuntimeError as exc:
        if "tests failed" not in str(exc):
            raise
        # otter's summary has "<q> results: All test cases passed!" or "<q> results:" + details
        failed = re.findall(r"^\s*(\S+) results:\s*$", str(exc), flags=re.MULTILINE)
        raise MetanbError(
            f"{source.name}: the solutions fail their own tests (questions: "
            f"{', '.join(failed) or '?'}); fix the source or build with --no-run-tests "
            "to inspect it"
        ) from exc
    except (AssignNotebookFormatException, ValueError, AssertionError, yaml.YAMLError) as exc:
        # a malformed source: otter's message names the question and the cell number
        raise MetanbError(
            f"{source.name}: not a valid otter assign notebook: {_first_line(exc)}"
        ) from exc
    finally:
        os.chdir(cwd)  # otter restores it too; be sure even if it raised mid-way

    autograder = result / "autograder"
    zips = sorted(autograder.glob(f"{source.stem}-autograder_*.zip"))
    if not zips:
        raise MetanbError(f"{source.name}: otter assign wrote no autograder zip in {autograder}")
    # otter stamps the zip name (and its members) with the build time; a stable name is easier
    # to document and use, and stable bytes keep a rebuild from showing up as a change
    zip_path = autograder / f"{source.stem}-autograder.zip"
    repack_zip(zips[-1], zip_path)
    for stale in zips:
        stale.unlink()

    solution = autograder / source.name
    student = result / "student" / source.name
    for notebook in (student, solution):
        stabilize_cell_ids(notebook)
    return BuiltAssignment(
        name=source.stem,
        student_notebook=student,
        solution_notebook=solution,
        autograder_zip=zip_path,
        points=question_points(solution),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_all(
    source_dir: Path,
    out_dir: Path,
    *,
    book_dir: Path | None = None,
    run_tests: bool = True,
    names: Sequence[str] = (),
) -> list[BuiltAssignment]:
    """Build every source in ``source_dir`` (or only ``names``) and refresh the book's copies.

    ``book_dir`` (normally ``book/assignments``) receives each student notebook as
    ``<name>.ipynb``; ``None`` leaves the book untouched.
    """
    sources = find_sources(Path(source_dir))
    if names:
        known = {p.stem: p for p in sources}
        missing = [n for n in names if n not in known]
        if missing:
            raise MetanbError(
                f"unknown assignment(s) {', '.join(missing)}; choose from {', '.join(known)}"
            )
        sources = [known[n] for n in names]
    built = [build_assignment(src, Path(out_dir), run_tests=run_tests) for src in sources]
    if book_dir is not None:
        for item in built:
            book_copy = Path(book_dir) / item.student_notebook.name
            atomic_write_bytes(book_copy, item.student_notebook.read_bytes())
    return built
