"""The book's notebooks tell nbval what to check through cell tags, never through comments.

nbval honours a ``# NBVAL_*`` comment only when the line is the marker alone: a marker with a
note after it (``# NBVAL_IGNORE_OUTPUT  (why ...)``) is silently ignored, and the output it
meant to exempt is compared after all, which failed ``make test`` on another CPU. Cell tags
(``nbval-ignore-output``, ...) have no such trap, and readers of the book do not see them.

Outputs that differ between CPUs (accuracies after training: vector instructions of different
CPUs round float sums differently, and training amplifies that) must be tagged; what the
chapter claims about them is printed by an untagged cell, so nbval still checks it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import comment_markers, find_comment_markers, find_metadata_tags, metadata_tags

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(
    p
    for p in BOOK.rglob("*.ipynb")
    if not {"_build", ".ipynb_checkpoints", "dist"} & set(p.relative_to(BOOK).parts)
)
# what nbval runs: book/assignments/conftest.py keeps it away from the assignment notebooks
CHAPTERS = sorted(p for p in NOTEBOOKS if p.relative_to(BOOK).parts[0] != "assignments")

# Jupyter Book / MyST-NB tags that change only how a cell is shown (or whether it runs)
DISPLAY_TAGS = {
    "hide-input", "hide-output", "hide-cell", "remove-input", "remove-output", "remove-cell",
    "full-width", "margin", "skip-execution", "scroll-output", "scroll-input", "thebe-init",
}  # fmt: skip
# a comment that means to be an nbval marker, well formed or not
MARKER_COMMENT = re.compile(r"^\s*#+\s*(NBVAL|PYTEST_VALIDATE)", re.IGNORECASE)
# calls whose printed results come from a trained model
TRAINED_OUTPUT_CALLS = ("evaluate_accuracy(", "evaluate_spec(")


def _code_cells(path: Path) -> list[tuple[int, nbformat.NotebookNode]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def marker_comments(source: str) -> tuple[list[str], list[str]]:
    """``(every marker comment line, those nbval would silently ignore)`` in a cell's source."""
    found = [line for line in source.splitlines() if MARKER_COMMENT.match(line)]
    ignored = [line for line in found if line.strip().lstrip("#").strip() not in comment_markers]
    return found, ignored


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _text_outputs(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_every_notebook_is_checked():
    names = {p.relative_to(BOOK).as_posix() for p in NOTEBOOKS}
    assert [p.name for p in CHAPTERS][:6] == [
        "01_lora_and_retraining.ipynb", "02_linear_model.ipynb", "03_why_sr_fails.ipynb",
        "04_lora_ml_theory.ipynb", "05_roberta_convai2.ipynb", "06_results.ipynb",
    ]  # fmt: skip
    assert "assignments/a1_standard_retraining.ipynb" in names


def test_marker_with_a_note_is_what_nbval_ignores():
    """The trap itself, in nbval's own parser: why the tests below exist."""
    noted = "# NBVAL_IGNORE_OUTPUT  (accuracies differ between CPUs)\nprint(1)"
    alone = "# NBVAL_IGNORE_OUTPUT\nprint(1)"
    assert dict(find_comment_markers(noted)) == {}
    assert dict(find_comment_markers(alone)) == {"check": False}
    assert marker_comments(noted) == ([noted.splitlines()[0]], [noted.splitlines()[0]])
    assert marker_comments(alone) == (["# NBVAL_IGNORE_OUTPUT"], [])
    assert marker_comments("x = 1  # NBVAL_SKIP is not at the start\n") == ([], [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(BOOK).as_posix())
def test_no_malformed_nbval_marker(path):
    bad = [
        f"cell {i}: {line.strip()!r}"
        for i, cell in _code_cells(path)
        for line in marker_comments(cell.source)[1]
    ]
    assert bad == [], "nbval ignores these markers (a marker must be alone on its line)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(BOOK).as_posix())
def test_no_nbval_comment_at_all_only_tags(path):
    found = [
        f"cell {i}: {line.strip()!r}"
        for i, cell in _code_cells(path)
        for line in marker_comments(cell.source)[0]
    ]
    assert found == [], "use nbval's cell tags (readers do not see them), not comments"
    assert not any(dict(find_comment_markers(c.source)) for _, c in _code_cells(path))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_tags_are_known_to_nbval_or_jupyter_book(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        assert isinstance(tags, list) and all(isinstance(t, str) for t in tags), f"cell {i}"
        unknown = sorted(set(tags) - set(metadata_tags) - DISPLAY_TAGS)
        assert unknown == [], f"cell {i}: tags nbval does not know: {unknown}"
        nbval_tags = [t for t in tags if t in metadata_tags]
        options = [option for option, _ in find_metadata_tags(cell.metadata)]
        assert len(options) == len(set(options)) == len(nbval_tags), f"cell {i}: conflicting tags"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_stored_outputs_are_clean(path):
    """No stored error (unless expected), no timing or progress bar: none would compare."""
    for i, cell in _code_cells(path):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if "raises-exception" not in _tags(cell) and "nbval-raises-exception" not in _tags(cell):
            assert errors == [], f"cell {i} stored an error: {errors[0].get('ename')}"
        if {"nbval-ignore-output", "nbval-skip"} & set(_tags(cell)):
            continue
        text = _text_outputs(cell)
        timing = re.search(r"\d(\.\d+)? ?(s/it|it/s|ms|seconds?)\b|\d+:\d\d<|elapsed", text)
        assert timing is None, f"cell {i} prints a timing: {timing.group(0)!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_outputs_of_trained_models_are_tagged(path):
    """Accuracies after training differ between CPUs: nbval must not compare them."""
    for i, cell in _code_cells(path):
        if any(call in cell.source for call in TRAINED_OUTPUT_CALLS) and _text_outputs(cell):
            assert "nbval-ignore-output" in _tags(cell), f"{path.name} cell {i}"


def test_chapter_5_claims_are_compared_and_hold():
    """The tagged accuracies are backed by claims that nbval does compare (untagged)."""
    cells = _code_cells(BOOK / "05_roberta_convai2.ipynb")
    ignored = [i for i, c in cells if "nbval-ignore-output" in _tags(c)]
    claims = [c for _, c in cells if "claims = {" in c.source]
    assert len(ignored) == 4 and len(claims) == 1
    assert _tags(claims[0]) == []
    lines = _text_outputs(claims[0]).splitlines()
    assert len(lines) == 3 and all(line.startswith("holds:  ") for line in lines), lines
