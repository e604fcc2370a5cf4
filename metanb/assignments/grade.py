"""Grade submissions locally with an autograder zip, without Docker.

otter-grader 7's ``otter grade`` runs every submission in a Docker container; ``otter run``
grades one submission in the current Python environment. This module is ``otter run`` over
many submissions with a CSV of scores, for instructors who have the course environment
(``pip install 'metanb[assign]'``) but no Docker.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metanb.assignments.build import require_otter
from metanb.errors import MetanbError
from metanb.io import atomic_write_text


@dataclass(frozen=True)
class GradeReport:
    """One submission's result: points scored and possible per autograded question."""

    submission: Path
    scores: dict[str, float]
    possible: dict[str, float]
    summary: str

    @property
    def total(self) -> float:
        return float(sum(self.scores.values()))

    @property
    def total_possible(self) -> float:
        return float(sum(self.possible.values()))

    def failed(self) -> list[str]:
        """The questions that lost points."""
        return [q for q, s in self.scores.items() if s < self.possible[q]]


def grade(submission: Path, autograder_zip: Path, *, quiet: bool = True) -> GradeReport:
    """Execute ``submission`` (.ipynb or otter's export .zip) and run every test on it.

    The notebook runs in a fresh kernel of this environment, as ``otter run`` does; errors in
    the student's cells do not stop grading (the questions they break score zero).
    """
    require_otter()
    from otter.api import grade_submission

    submission, autograder_zip = Path(submission), Path(autograder_zip)
    for path, what in ((submission, "submission"), (autograder_zip, "autograder zip")):
        if not path.is_file():
            raise MetanbError(f"{what} not found: {path}")
    results = grade_submission(str(submission), str(autograder_zip), quiet=quiet)
    return GradeReport(
        submission=submission,
        scores={name: float(r.score) for name, r in results.results.items()},
        possible={name: float(r.possible) for name, r in results.results.items()},
        summary=results.summary(),
    )


def grade_many(
    submissions: Iterable[Path], autograder_zip: Path, *, quiet: bool = True
) -> list[GradeReport]:
    """Grade each submission in turn (a directory stands for the notebooks and zips in it,
    the autograder zip itself excepted)."""
    paths: list[Path] = []
    for item in map(Path, submissions):
        if item.is_dir():
            paths += sorted(
                p
                for p in item.iterdir()
                if p.suffix in (".ipynb", ".zip") and p.resolve() != Path(autograder_zip).resolve()
            )
        else:
            paths.append(item)
    if not paths:
        raise MetanbError("no submissions to grade (give .ipynb/.zip files or folders of them)")
    return [grade(p, autograder_zip, quiet=quiet) for p in paths]


def write_scores_csv(reports: Sequence[GradeReport], path: Path) -> None:
    """One row per submission: file, each question's score, total, possible."""
    questions = sorted({q for r in reports for q in r.possible})
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["submission", *questions, "total", "possible"])
    for r in reports:
        row = [r.scores.get(q, 0.0) for q in questions]
        writer.writerow([r.submission.name, *row, r.total, r.total_possible])
    atomic_write_text(path, buffer.getvalue())
