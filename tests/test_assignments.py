"""The course assignments: built with otter assign, graded with otter run (no Docker).

One build of every source (in a temp folder) serves all tests. Grading executes a notebook in a
fresh kernel, a few seconds each: the solutions must score full marks, the untouched student
notebooks zero, and a planted mistake must cost exactly the question it belongs to.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from metanb import cli
from metanb.assignments import BuiltAssignment, build_all, build_assignment, grade, require_otter
from metanb.assignments.reproducible import (
    ZIP_EPOCH,
    content_cell_id,
    repack_zip,
    stabilize_cell_ids,
)
from metanb.errors import MetanbError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "book" / "assignments" / "source"
BOOK = ROOT / "book" / "assignments"
NAMES = sorted(p.stem for p in SOURCES.glob("*.ipynb"))

# A wrong answer per assignment that still passes the public tests of its question, and the
# one question whose hidden tests must catch it.
PLANTED = {
    "a1_standard_retraining": (
        "q3_sr_least_squares",
        "xx = (X.transpose(-1, -2) @ X).sum(0)",
        "xx = (X.transpose(-1, -2) @ X).mean(0)",  # right for one task, T times off for T
    ),
    "a2_lora_ml_linear": (
        "q1_objective",
        "return (R**2).sum((-1, -2)).mean()",
        "return (R**2).sum()",  # the sum over tasks instead of the mean
    ),
    "a3_meta_lora_network": (
        "q4_finetune",
        "model, batches, rank=rank,",
        "model, batches, rank=1,",  # ignores the rank asked for: SR stays at its rank-1 floor
    ),
}


# A right answer obtained against the rules (the package's solver called from the student's
# function): the question's hidden tests, which re-run the function under
# metanb.assignments.rules.follows_rules, must catch it.
RULE_BREAKS = {
    "a1_standard_retraining": (
        "q2_sr_population",
        "return A_star + (U_star @ U_star.transpose(-1, -2)).mean(0)",
        "return L.sr_limit(A_star, U_star)",
    ),
    "a2_lora_ml_linear": (
        "q1_objective",
        "return (R**2).sum((-1, -2)).mean()",
        "return L.risk(A + U @ U.transpose(-1, -2), L.as_moments(M)).mean()",
    ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltAssignment]:
    out = tmp_path_factory.mktemp("assignments")
    return {b.name: b for b in build_all(SOURCES, out, book_dir=None, run_tests=False)}


def test_three_assignments_with_points(built):
    assert NAMES == ["a1_standard_retraining", "a2_lora_ml_linear", "a3_meta_lora_network"]
    for item in built.values():
        assert item.total_points == 10
        assert item.autograder_zip.name == f"{item.name}-autograder.zip"


# ------------------------------------------------------------------ what students receive


def _secret_lines(source: Path) -> tuple[set[str], set[str]]:
    """Lines of ``source`` that only solutions / only hidden tests contain (long enough to be
    distinctive, and not also present in the notebook's public cells)."""
    nb = nbformat.read(source, as_version=4)
    solution, hidden, public = [], [], []
    block = None
    for cell in nb.cells:
        text = cell.source
        if cell.cell_type == "raw":
            m = re.match(r"#\s+(BEGIN|END)\s+(SOLUTION|TESTS)", text)
            if m:
                block = m.group(2) if m.group(1) == "BEGIN" else None
            continue
        lines = text.splitlines()
        if block == "TESTS":
            (hidden if lines and lines[0].strip() == "# HIDDEN" else public).extend(lines)
        elif block == "SOLUTION" and cell.cell_type == "markdown":
            solution.extend(lines)
        elif block == "SOLUTION":
            inside = False
            for line in lines:
                if line.strip().startswith("# BEGIN SOLUTION"):
                    inside = True
                elif line.strip() == "# END SOLUTION":
                    inside = False
                elif inside or line.rstrip().endswith("# SOLUTION"):
                    solution.append(line)
                else:
                    public.append(line)
        else:
            public.extend(lines)
    shown = {line.strip() for line in public}

    def distinctive(lines: list[str]) -> set[str]:
        return {s for s in (line.strip() for line in lines) if len(s) >= 12 and s not in shown}

    return distinctive(solution), distinctive(hidden) - {"# HIDDEN"}


def _student_lines(notebook: Path) -> set[str]:
    """Every stripped line of every cell and of every test case the student notebook carries."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    parts = ["".join(c["source"]) for c in nb["cells"]]
    for test in nb["metadata"].get("otter", {}).get("tests", {}).values():
        parts += [case["code"] for suite in test["suites"] for case in suite["cases"]]
    lines = "\n".join(parts).splitlines()
    return {re.sub(r"^(>>>|\.\.\.) ", "", line.strip()).strip() for line in lines}


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_has_no_solutions_and_no_hidden_tests(built, name):
    solution, hidden = _secret_lines(SOURCES / f"{name}.ipynb")
    assert len(solution) >= 5 and len(hidden) >= 5  # the check below has something to find
    lines = _student_lines(built[name].student_notebook)
    assert sorted(solution & lines) == []
    assert sorted(hidden & lines) == []
    text = built[name].student_notebook.read_text(encoding="utf-8")
    assert "SOLUTION" not in text and "HIDDEN" not in text
    tests = json.loads(built[name].student_notebook.read_text())["metadata"]["otter"]["tests"]
    cases = [c for t in tests.values() for s in t["suites"] for c in s["cases"]]
    assert cases and not any(c["hidden"] for c in cases)


@pytest.mark.parametrize("name", NAMES)
def test_autograder_zip_holds_every_question_with_hidden_tests(built, name):
    with zipfile.ZipFile(built[name].autograder_zip) as zf:
        tests = {Path(n).stem: zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/")}
        environment = zf.read("environment.yml").decode()  # what Gradescope installs
    assert set(tests) == set(built[name].points)
    for question, text in tests.items():
        assert "'hidden': True" in text, question
    assert "metanb[assign] @ git+https://github.com/metanb/metanb" in environment


@pytest.mark.parametrize("name", NAMES)
def test_committed_student_notebook_is_up_to_date(built, name):
    committed = nbformat.read(BOOK / f"{name}.ipynb", as_version=4)
    fresh = nbformat.read(built[name].student_notebook, as_version=4)
    hint = f"book/assignments/{name}.ipynb is stale: run `python -m metanb assignments build`"
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in fresh.cells
    ], hint
    assert committed.metadata.get("otter") == fresh.metadata.get("otter"), hint
    # byte for byte (cell ids included): `make assignments` leaves `git status` clean
    assert (BOOK / f"{name}.ipynb").read_bytes() == built[name].student_notebook.read_bytes(), hint


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def test_two_builds_are_byte_identical(built, tmp_path):
    """otter gives cells random ids and zip members the build time; a build must not."""
    first = built[NAMES[0]].student_notebook.parents[2]
    again = build_all(SOURCES, tmp_path, book_dir=None, run_tests=False)
    assert again[0].student_notebook.parents[2] == tmp_path
    old, new = _files(first), _files(tmp_path)
    assert len(old) == 5 * len(NAMES)  # student + solutions + zip + otter_config + requirements
    assert sorted(new) == sorted(old)
    assert [name for name in old if old[name] != new[name]] == []


@pytest.mark.parametrize("name", NAMES)
def test_built_notebooks_have_valid_unique_cell_ids(built, name):
    for path in (built[name].student_notebook, built[name].solution_notebook):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        ids = [c.id for c in nb.cells]
        assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)


def test_content_cell_ids_are_stable_and_unique():
    taken: set[str] = set()
    ids = [content_cell_id("code", s, taken) for s in ("x = 1", "y = 2", "x = 1")]
    assert len(set(ids)) == 3 and taken == set(ids)  # a repeated cell gets a fresh id
    # content, not position: a cell inserted first leaves the others' ids alone
    shifted: set[str] = set()
    assert [content_cell_id("code", s, shifted) for s in ("new", "x = 1", "y = 2")][1:] == ids[:2]
    assert content_cell_id("markdown", "x = 1", set()) != ids[0]  # the cell type counts


def test_stabilize_cell_ids_changes_only_the_ids(tmp_path):
    cells = [("code", "a = 1"), ("raw", "text"), ("code", "a = 1")]
    path = _write_notebook(tmp_path / "n.ipynb", cells)
    before = nbformat.read(path, as_version=4)
    stabilize_cell_ids(path)
    once = path.read_bytes()
    after = nbformat.read(path, as_version=4)
    assert [c.id for c in after.cells] != [c.id for c in before.cells]
    for cell in before.cells + after.cells:
        del cell["id"]
    assert after == before
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"other-{i}"  # otter writes other ids on the next build
    path.write_text(nbformat.writes(nb))
    stabilize_cell_ids(path)
    assert path.read_bytes() == once


def test_repack_zip_fixes_order_and_times_and_keeps_modes(tmp_path):
    def make(path: Path, order: list[str], when: tuple[int, ...]) -> Path:
        with zipfile.ZipFile(path, "w") as zf:
            for name in order:
                info = zipfile.ZipInfo(name, date_time=when)
                info.external_attr = (0o755 if name == "run" else 0o644) << 16
                zf.writestr(info, f"content of {name}")
        return path

    a = make(tmp_path / "a.zip", ["run", "tests/q1.py", "env.yml"], (2026, 12, 1, 9, 30, 0))
    b = make(tmp_path / "b.zip", ["env.yml", "tests/q1.py", "run"], (2027, 1, 2, 3, 4, 6))
    assert a.read_bytes() != b.read_bytes()
    repack_zip(a, tmp_path / "a2.zip")
    repack_zip(b, tmp_path / "b2.zip")
    assert (tmp_path / "a2.zip").read_bytes() == (tmp_path / "b2.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a2.zip") as zf:
        assert zf.namelist() == ["env.yml", "run", "tests/q1.py"]
        assert {i.date_time for i in zf.infolist()} == {ZIP_EPOCH}
        assert {i.filename: i.external_attr >> 16 for i in zf.infolist()} == {
            "env.yml": 0o644, "run": 0o755, "tests/q1.py": 0o644}
        assert zf.read("run") == b"content of run"


# ------------------------------------------------------------------ grading


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_solutions_score_full_marks(built, name):
    report = grade(built[name].solution_notebook, built[name].autograder_zip)
    assert report.possible == built[name].points
    assert report.total == report.total_possible == 10, report.summary


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_untouched_student_notebook_scores_zero(built, name):
    report = grade(built[name].student_notebook, built[name].autograder_zip)
    assert report.total_possible == 10
    assert report.total == 0, report.summary


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_planted_wrong_answer_fails_its_question(built, name, tmp_path):
    question, right, wrong = PLANTED[name]
    nb = nbformat.read(built[name].solution_notebook, as_version=4)
    cells = [c for c in nb.cells if right in c.source]
    assert len(cells) == 1, "the planted line must occur once in the solutions"
    cells[0].source = cells[0].source.replace(right, wrong)
    submission = tmp_path / built[name].solution_notebook.name
    nbformat.write(nb, submission)
    report = grade(submission, built[name].autograder_zip)
    assert report.failed() == [question], report.summary
    assert 0 < report.total < report.total_possible


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RULE_BREAKS))
def test_calling_the_package_solver_costs_the_question(built, name, tmp_path):
    question, right, cheat = RULE_BREAKS[name]
    nb = nbformat.read(built[name].solution_notebook, as_version=4)
    cells = [c for c in nb.cells if right in c.source]
    assert len(cells) == 1, "the replaced line must occur once in the solutions"
    cells[0].source = cells[0].source.replace(right, cheat)
    submission = tmp_path / built[name].solution_notebook.name
    nbformat.write(nb, submission)
    report = grade(submission, built[name].autograder_zip)
    assert report.failed() == [question], report.summary  # same numbers, against the rules
    assert report.total < report.total_possible


# ------------------------------------------------------------------ the build itself


BROKEN_SOURCE = [
    ("raw", "# ASSIGNMENT CONFIG\nname: broken\nexport_cell: false"),
    ("raw", "# BEGIN QUESTION\nname: q1\npoints: 1"),
    ("raw", "# BEGIN SOLUTION"),
    ("code", "def double(x):\n    # BEGIN SOLUTION\n    return 3 * x\n    # END SOLUTION"),
    ("raw", "# END SOLUTION"),
    ("raw", "# BEGIN TESTS"),
    ("code", "# HIDDEN\nassert double(2) == 4"),
    ("raw", "# END TESTS"),
    ("raw", "# END QUESTION"),
]


def _write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    make = {"raw": nbformat.v4.new_raw_cell, "code": nbformat.v4.new_code_cell}
    nb = nbformat.v4.new_notebook(cells=[make[kind](text) for kind, text in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Py"}
    nbformat.write(nb, path)
    return path


def test_build_refuses_solutions_that_fail_their_tests(tmp_path):
    source = _write_notebook(tmp_path / "broken.ipynb", BROKEN_SOURCE)
    with pytest.raises(
        MetanbError,
        match=r"broken.ipynb: the solutions fail their own tests "
        r"\(questions: q1\); fix the source or build with --no-run-tests",
    ):
        build_assignment(source, tmp_path / "out")
    built = build_assignment(source, tmp_path / "out", run_tests=False)  # drafting still works
    assert built.points == {"q1": 1.0}
    assert "return 3 * x" not in built.student_notebook.read_text()


def test_malformed_source_is_a_one_line_error(tmp_path):
    cells = [c for c in BROKEN_SOURCE if c[1] != "# BEGIN QUESTION\nname: q1\npoints: 1"]
    source = _write_notebook(tmp_path / "malformed.ipynb", cells)
    with pytest.raises(MetanbError) as info:
        build_assignment(source, tmp_path / "out", run_tests=False)
    message = str(info.value)
    assert message.startswith("malformed.ipynb: not a valid otter assign notebook: Found a begin")
    assert "\n" not in message


def test_cli_build_missing_source_is_one_line(tmp_path, capsys):
    code = cli.main(["assignments", "build", "--source", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no assignment sources at" in err[0] and "--source DIR" in err[0]


def test_cli_build_unknown_name_lists_the_choices(capsys):
    code = cli.main(["assignments", "build", "no_such", "--out", "unused"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown assignment(s) no_such" in err and "a1_standard_retraining" in err


def test_missing_otter_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "otter", None)
    monkeypatch.setitem(sys.modules, "otter.assign", None)
    with pytest.raises(MetanbError, match=r"pip install 'metanb\[assign\]'"):
        require_otter()


def test_cli_build_writes_student_notebook_and_book_copy(tmp_path, capsys):
    source_dir = tmp_path / "assignments" / "source"
    source_dir.mkdir(parents=True)
    fixed = [(k, t.replace("3 * x", "2 * x")) for k, t in BROKEN_SOURCE]
    _write_notebook(source_dir / "tiny.ipynb", fixed)
    out = tmp_path / "dist"
    code = cli.main(["assignments", "build", "--source", str(source_dir), "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == "tiny: 1 autograded points (q1 1); solutions pass every test"
    assert (out / "tiny" / "autograder" / "tiny-autograder.zip").is_file()
    assert (tmp_path / "assignments" / "tiny.ipynb").read_text() == (
        out / "tiny" / "student" / "tiny.ipynb"
    ).read_text()


def test_cli_grade_writes_scores_csv(tmp_path, capsys):
    source = tmp_path / "source" / "tiny.ipynb"
    source.parent.mkdir()
    _write_notebook(source, [(k, t.replace("3 * x", "2 * x")) for k, t in BROKEN_SOURCE])
    built = build_assignment(source, tmp_path / "out", run_tests=False)
    code = cli.main(
        [
            "assignments",
            "grade",
            "-a",
            str(built.autograder_zip),
            str(built.student_notebook),
            str(built.solution_notebook.parent),
            "--csv",
            str(tmp_path / "scores.csv"),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].endswith("tiny.ipynb: 0 / 1 (lost points: q1)")
    assert out[1].endswith("tiny.ipynb: 1 / 1 (lost points: none)")
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows == [
        "submission,q1,total,possible",
        "tiny.ipynb,0.0,0.0,1.0",
        "tiny.ipynb,1.0,1.0,1.0",
    ]


def test_nbval_collects_nothing_under_book_assignments():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            "--nbval-current-env",
            str(BOOK),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert "no tests collected" in out.stdout, out.stdout + out.stderr
