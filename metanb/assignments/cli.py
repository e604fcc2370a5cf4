"""``python -m metanb assignments build|grade``: make and grade the course assignments."""

from __future__ import annotations

import argparse
from pathlib import Path

from metanb.assignments.build import DEFAULT_OUT_SUBDIR, SOURCE_SUBDIR


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "assignments",
        help="build the graded assignments (otter-grader) or grade submissions locally",
        description="Course assignments: student notebooks and autograder zips from the "
        "otter-assign sources in book/assignments/source/.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    build = actions.add_parser(
        "build",
        help="student notebooks + autograder zips from the source notebooks",
        description="Run otter assign on every source notebook (solutions must pass all their "
        "tests), write OUT/<name>/{student,autograder}/ and refresh the student notebooks "
        "the book shows in book/assignments/.",
    )
    build.add_argument(
        "names", nargs="*", metavar="NAME", help="only these assignments (default: all)"
    )
    build.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT_SUBDIR})"
    )
    build.add_argument(
        "--source", type=Path, default=None, help=f"source notebooks (default: {SOURCE_SUBDIR})"
    )
    build.add_argument(
        "--no-book",
        action="store_true",
        help="do not copy the student notebooks into the book (book/assignments/)",
    )
    build.add_argument(
        "--no-run-tests",
        action="store_true",
        help="skip grading the solutions with every test (faster; for drafting)",
    )
    build.set_defaults(func=_build)

    grade = actions.add_parser(
        "grade",
        help="grade submissions in this environment (otter run, no Docker)",
        description="Execute each submission (.ipynb or otter export .zip; folders are "
        "searched) with the autograder zip and print its score; --csv writes all scores.",
    )
    grade.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    grade.add_argument(
        "--autograder",
        "-a",
        type=Path,
        required=True,
        help="the autograder zip from `assignments build`",
    )
    grade.add_argument("--csv", type=Path, default=None, help="write one row per submission")
    grade.set_defaults(func=_grade)


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is inside it (shorter output)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _build(args: argparse.Namespace) -> int:
    from metanb.assignments.build import build_all, repository_root

    root = repository_root()
    source = args.source if args.source is not None else root / SOURCE_SUBDIR
    out = args.out if args.out is not None else root / DEFAULT_OUT_SUBDIR
    book_dir = None if args.no_book else Path(source).parent
    built = build_all(
        source,
        out,
        book_dir=book_dir,
        run_tests=not args.no_run_tests,
        names=args.names,
    )
    checked = "solutions not graded" if args.no_run_tests else "solutions pass every test"
    for item in built:
        parts = ", ".join(f"{q} {p:g}" for q, p in item.points.items())
        print(f"{item.name}: {item.total_points:g} autograded points ({parts}); {checked}")
        print(f"  student:    {_shown(item.student_notebook)}")
        print(f"  solutions:  {_shown(item.solution_notebook)}")
        print(f"  autograder: {_shown(item.autograder_zip)}")
        if book_dir is not None:
            print(f"  book:       {_shown(Path(book_dir) / item.student_notebook.name)}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from metanb.assignments.grade import grade_many, write_scores_csv

    reports = grade_many(args.submissions, args.autograder)
    for r in reports:
        lost = ", ".join(r.failed()) or "none"
        print(f"{_shown(r.submission)}: {r.total:g} / {r.total_possible:g} (lost points: {lost})")
    if args.csv is not None:
        write_scores_csv(reports, args.csv)
        print(f"scores: {_shown(args.csv)}")
    return 0
