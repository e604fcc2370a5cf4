"""The shared infrastructure: CLI dispatch, one-line errors, provenance, seeding."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from metanb import MetanbError, cli
from metanb.provenance import git_commit, provenance
from metanb.seeding import seed_everything


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metanb", *args], capture_output=True, text=True, timeout=120
    )


def test_version_flag_prints_package_version():
    from metanb import __version__

    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"metanb {__version__}"


def test_unknown_command_is_one_line_exit_2():
    out = run_cli("no-such-command")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "invalid choice" in out.stderr
    assert "Traceback" not in out.stderr


def test_metanb_error_in_handler_becomes_one_line(monkeypatch, capsys):
    def handler(args):
        raise MetanbError("bad thing; do this instead")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.add_parser("boom").set_defaults(func=handler)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "metanb boom: error: bad thing; do this instead\n"


def test_provenance_has_the_fields_results_rely_on():
    info = provenance("cpu")
    for key in ("metanb_version", "git_commit", "device", "torch", "time_utc", "python"):
        assert key in info
    assert info["device"].startswith("cpu:")
    json.dumps(info)  # must be JSON-serialisable as stored in results files


def test_git_commit_outside_a_repo_is_none(tmp_path):
    assert git_commit(tmp_path) is None


def test_seed_everything_makes_torch_reproducible():
    g1 = seed_everything(123)
    a = torch.randn(5)
    b = torch.randn(3, generator=g1)
    g2 = seed_everything(123)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(b, torch.randn(3, generator=g2))


def _git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.strip()


def test_git_commit_names_the_commit_and_marks_tracked_changes_dirty(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-qm", "c")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path).startswith(head)
    (tmp_path / "f.txt").write_text("b\n")
    assert git_commit(tmp_path) == head + "-dirty"


def test_only_changes_under_the_code_path_mark_the_commit_dirty(tmp_path):
    """A results file written (or edited) beside the code leaves the code's commit clean."""
    code, results = tmp_path / "pkg", tmp_path / "results"
    code.mkdir()
    results.mkdir()
    (code / "m.py").write_text("x = 1\n")
    (results / "r.jsonl").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "c")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (results / "r.jsonl").write_text("{}\n{}\n")
    (results / "new.jsonl").write_text("{}\n")
    assert git_commit(code) == head
    (code / "new.py").write_text("y = 2\n")
    assert git_commit(code) == head + "-dirty"
