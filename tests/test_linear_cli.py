"""``python -m metanb linear``: JSON output, its values, the summary, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metanb import MetanbError
from metanb.linear import run_linear

KEYS = {"method", "d", "k", "tasks", "rank", "samples", "seed", "base_rel_error",
        "finetune_excess_error", "sr_floor_theory"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metanb", "linear", *args],
                          capture_output=True, text=True, timeout=120)


def test_json_output_for_sr_and_lora_ml():
    out = run_cli("--method", "sr", "--d", "10", "--k", "2", "--tasks", "3", "--json")
    assert out.returncode == 0, out.stderr
    sr = json.loads(out.stdout)
    assert KEYS <= sr.keys()
    assert (sr["method"], sr["d"], sr["k"], sr["tasks"], sr["rank"]) == ("sr", 10, 2, 3, 2)
    assert sr["samples"] == "inf" and sr["seed"] == 0
    # population SR then the population-optimal rank-k fit: exactly at the SR floor
    assert sr["finetune_excess_error"] == pytest.approx(sr["sr_floor_theory"], rel=1e-8)
    assert sr["base_rel_error"] > 0.05

    out = run_cli("--method", "lora-ml", "--d", "10", "--k", "2", "--tasks", "3", "--rank", "2",
                  "--samples", "inf", "--finetune-samples", "400", "--seed", "1", "--json")
    assert out.returncode == 0, out.stderr
    ml = json.loads(out.stdout)
    assert ml["method"] == "lora-ml" and ml["finetune_samples"] == 400 and ml["seed"] == 1
    assert ml["base_rel_error"] < 1e-4
    assert 0 < ml["finetune_excess_error"] < ml["sr_floor_theory"]
    assert ml == json.loads(json.dumps(run_linear("lora-ml", 10, 2, 3, rank=2,
                                                  finetune_samples=400, seed=1)))


def test_human_readable_summary():
    out = run_cli("--method", "sr", "--d", "8", "--k", "1", "--tasks", "2", "--samples", "50")
    assert out.returncode == 0, out.stderr
    assert "base relative error" in out.stdout and "SR floor" in out.stdout
    assert not out.stdout.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank", "0"], "rank must satisfy 1 <= rank <= d"),
        (["--k", "11"], "k must satisfy 1 <= k <= d"),
        (["--tasks", "0"], "tasks must be at least 1"),
        (["--d", "ten"], "invalid int value"),
        (["--samples", "-5"], "positive integer or 'inf'"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args, message):
    base = {"--method": "sr", "--d": "10", "--k": "2", "--tasks": "3"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    out = run_cli(*[x for pair in base.items() for x in pair], "--json")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_run_linear_validates_its_arguments():
    with pytest.raises(MetanbError, match="method"):
        run_linear("maml", 5, 1, 2)
    with pytest.raises(MetanbError, match="adapter"):
        run_linear("sr", 5, 1, 2, adapter="diagonal")
    with pytest.raises(MetanbError, match="finetune samples"):
        run_linear("sr", 5, 1, 2, finetune_samples=0)
