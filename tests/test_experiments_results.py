"""Results bookkeeping: mean ± std over seeds, paired gains, the table, the figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from metanb.experiments.config import ExperimentConfig
from metanb.experiments.results import (
    find_runs,
    format_table,
    mean_std,
    paired_gain,
    summarize,
)
from metanb.experiments.runner import CONFIG_FILE, RESULTS_FILE, append_jsonl


def rec(method: str, seed: int, finetune: str, acc: float, rrank: int | None = None) -> dict:
    return {"method": method, "seed": seed, "retrain_rank": rrank, "finetune": finetune,
            "accuracy": acc, "provenance": {"device": "cpu:test", "git_commit": "abc"}}


RECORDS = [
    rec("standard", 0, "0", 0.5), rec("standard", 1, "0", 0.6), rec("standard", 2, "0", 0.7),
    rec("standard", 0, "4", 0.60), rec("standard", 1, "4", 0.62), rec("standard", 2, "4", 0.70),
    rec("lora-ml", 0, "4", 0.70, 2), rec("lora-ml", 1, "4", 0.80, 2),
    rec("lora-ml", 2, "4", 0.75, 2), rec("lora-ml", 0, "head", 0.4, 2),
    rec("lora-ml", 0, "4", 0.10, 8),  # another retraining rank: its own row, not in the gain
]


def test_mean_std_is_the_sample_std() -> None:
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.3]) == (0.3, None)


def test_summarize_groups_over_seeds() -> None:
    rows = summarize(RECORDS, methods=["standard", "lora-ml"])
    got = [(r.method, r.retrain_rank, r.finetune, r.n) for r in rows]
    assert got == [("standard", None, "0", 3), ("standard", None, "4", 3),
                   ("lora-ml", 2, "4", 3), ("lora-ml", 2, "head", 1), ("lora-ml", 8, "4", 1)]
    sr4 = rows[1]
    assert sr4.mean == pytest.approx(0.64)
    assert sr4.std == pytest.approx(math.sqrt(((0.04) ** 2 + 0.02**2 + 0.06**2) / 2))
    assert rows[3].std is None


def test_paired_gain_pairs_by_seed() -> None:
    gains = paired_gain(RECORDS)
    mean, std, n = gains["4"]
    assert n == 3 and mean == pytest.approx(0.11)  # (0.10 + 0.18 + 0.05) / 3
    assert std == pytest.approx(mean_std([0.10, 0.18, 0.05])[1])
    assert set(gains) == {"4"}  # SR has no head row, lora-ml r=2 has no rank-0 row


def test_table_shows_mean_pm_std() -> None:
    table = format_table(summarize(RECORDS, methods=["standard", "lora-ml"]))
    lines = table.splitlines()
    assert lines[0].split() == ["method", "\\", "fine-tuning", "rank", "0", "4", "head", "seeds"]
    assert "0.600 ± 0.100" in lines[2] and "0.640 ± 0.053" in lines[2]
    assert "lora-ml (r=2)" in lines[3] and "0.750 ± 0.050" in lines[3] and "0.400 ± –" in lines[3]


def write_run(folder: Path, T: int, records: list[dict]) -> None:
    folder.mkdir(parents=True)
    cfg = ExperimentConfig(profile="quick").override(
        [f"tasks.retrain={T}", "tasks.heldout=4", "data.personas=40"])
    cfg.save(folder / CONFIG_FILE)
    for r in records:
        append_jsonl(folder / RESULTS_FILE, r)


def test_cli_results_writes_table_and_figures(tmp_path: Path, capsys) -> None:
    from metanb.cli import main

    write_run(tmp_path / "T4", 4, RECORDS)
    write_run(tmp_path / "T8", 8, [{**r, "accuracy": r["accuracy"] / 2} for r in RECORDS])
    assert main(["results", str(tmp_path / "T4")]) == 0
    out = capsys.readouterr().out
    assert "0.640 ± 0.053" in out and "profile quick" in out
    assert (tmp_path / "T4" / "accuracy_vs_rank.png").stat().st_size > 1000

    assert main(["results", str(tmp_path), "--json", "--no-plots"]) == 0
    import json

    payload = json.loads(capsys.readouterr().out)
    assert [run["tasks"] for run in payload["runs"]] == [4, 8]
    assert payload["gain_vs_T"]["8"]["4"][0] == pytest.approx(0.055)
    assert len(find_runs(tmp_path)) == 2
    assert main(["results", str(tmp_path)]) == 0
    assert (tmp_path / "gain_vs_T.png").exists()
