"""Course assignments graded with otter-grader.

Three source notebooks in ``book/assignments/source/`` (otter assign format) become student
notebooks and autograder zips (``build_all``); submissions are graded locally with ``grade``.
The command line is ``python -m metanb assignments build|grade``.
"""

from metanb.assignments.build import (
    BuiltAssignment,
    build_all,
    build_assignment,
    find_sources,
    repository_root,
    require_otter,
)
from metanb.assignments.grade import GradeReport, grade, grade_many, write_scores_csv

__all__ = [
    "BuiltAssignment",
    "GradeReport",
    "build_all",
    "build_assignment",
    "find_sources",
    "grade",
    "grade_many",
    "repository_root",
    "require_otter",
    "write_scores_csv",
]
