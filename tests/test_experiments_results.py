"""Results bookkeeping: mean ± s.e. over seeds, paired gains with intervals and tests, the
tables, the figures' error bars, and the one-base-per-cell check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.results import (
    check_one_base_per_cell,
    default_comparisons,
    describe_run,
    find_runs,
    format_paired,
    format_provenance,
    format_report,
    format_sweep,
    format_table,
    gains_by_tasks,
    growth,
    growth_table,
    load_run,
    paired_differences,
    paired_gain,
    persona_pairs,
    report_json,
    rows_as_dicts,
    run_provenance,
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


def test_summarize_groups_over_seeds() -> None:
    rows = summarize(RECORDS, methods=["standard", "lora-ml"])
    got = [(r.method, r.retrain_rank, r.finetune, r.n) for r in rows]
    assert got == [("standard", None, "0", 3), ("standard", None, "4", 3),
                   ("lora-ml", 2, "4", 3), ("lora-ml", 2, "head", 1), ("lora-ml", 8, "4", 1)]
    sr4 = rows[1]
    std = math.sqrt(((0.04) ** 2 + 0.02**2 + 0.06**2) / 2)  # sample std, ddof = 1
    assert sr4.mean == pytest.approx(0.64) and sr4.std == pytest.approx(std)
    assert sr4.se == pytest.approx(std / math.sqrt(3)) and sr4.accuracies == (0.60, 0.62, 0.70)
    assert rows[3].std is None and rows[3].se is None and rows[3].estimate.method == "single"
    as_json = rows_as_dicts(rows)[1]
    assert as_json["se"] == pytest.approx(sr4.se) and as_json["seeds"] == [0, 1, 2]


# lora-ml − standard at rank 4, seeds 0-2: +0.10, +0.18, +0.05. By hand: mean 0.11, sample
# std √0.0043 = 0.06557, s.e. 0.03786, t(2) = 2.905, 95 % half-width 4.302653 · s.e. = 0.1629
GAIN_SE = math.sqrt(0.0043 / 3)


def test_paired_gain_pairs_by_seed() -> None:
    gains = paired_gain(RECORDS)
    assert set(gains) == {"4"}  # SR has no head row, lora-ml r=2 has no rank-0 row
    c = gains["4"]
    assert c.n == 3 and c.difference.mean == pytest.approx(0.11)
    assert c.difference.se == pytest.approx(GAIN_SE) and c.t == pytest.approx(0.11 / GAIN_SE)
    assert c.difference.high == pytest.approx(0.11 + 4.302653 * GAIN_SE, abs=1e-6)
    assert (c.wins, c.losses, c.p_sign) == (3, 0, 0.25)


def test_table_shows_mean_pm_se_and_says_so() -> None:
    table = format_table(summarize(RECORDS, methods=["standard", "lora-ml"]))
    lines = table.splitlines()
    assert lines[0] == "held-out accuracy, mean ± s.e. over 1–3 seeds (n = 1: no s.e.)"
    assert lines[1].split() == ["method", "\\", "fine-tuning", "rank", "0", "4", "head", "seeds"]
    assert "0.600 ± 0.058" in lines[3] and "0.640 ± 0.031" in lines[3]  # 0.1/√3, 0.0529/√3
    assert lines[4].startswith("lora-ml (r=2)") and "0.750 ± 0.029" in lines[4]
    assert "0.400 (n=1)" in lines[4] and lines[4].endswith("1–3")
    with pytest.raises(MetanbError, match="no summary rows"):
        format_table([])


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
    assert "0.640 ± 0.031" in out and "profile quick" in out
    assert "accuracy differences paired by seed (3 seeds)" in out
    assert (tmp_path / "T4" / "accuracy_vs_rank.png").stat().st_size > 1000

    assert main(["results", str(tmp_path), "--json", "--no-plots"]) == 0
    import json

    payload = json.loads(capsys.readouterr().out)
    assert [run["tasks"] for run in payload["runs"]] == [4, 8]
    assert payload["gain_vs_T"]["8"]["4"]["difference"]["mean"] == pytest.approx(0.055)
    paired = payload["runs"][0]["paired"]["lora-ml - standard"]["4"]
    assert paired["difference"]["se"] == pytest.approx(GAIN_SE) and paired["wins"] == 3
    assert len(find_runs(tmp_path)) == 2
    assert main(["results", str(tmp_path)]) == 0
    assert (tmp_path / "gain_vs_T.png").exists()


def persona_rec(method: str, seed: int, finetune: str, accs: dict[str, float],
                rrank: int | None = None) -> dict:
    return {**rec(method, seed, finetune, sum(accs.values()) / len(accs), rrank),
            "accuracy_per_persona": accs}


def test_paired_differences_keep_each_seed_and_drop_unpaired_ones() -> None:
    diffs = paired_differences(RECORDS)
    assert list(diffs) == ["4"]
    assert diffs["4"] == pytest.approx({0: 0.10, 1: 0.18, 2: 0.05})
    # seed 3 exists for SR only: no pair, so it is not a difference
    more = RECORDS + [rec("standard", 3, "4", 0.9)]
    assert sorted(paired_differences(more)["4"]) == [0, 1, 2]
    # any two methods, in either order
    flipped = paired_differences(RECORDS, method="standard", baseline="lora-ml")
    assert flipped["4"][1] == pytest.approx(-0.18)


def test_persona_pairs_pair_the_same_persona_of_the_same_seed() -> None:
    records = [
        persona_rec("standard", 0, "4", {"a": 0.5, "b": 0.25}),
        persona_rec("lora-ml", 0, "4", {"a": 0.75, "b": 0.25}, 4),
        persona_rec("standard", 1, "4", {"a": 0.5, "c": 1.0}),
        persona_rec("lora-ml", 1, "4", {"a": 0.25, "c": 0.5}, 4),
        persona_rec("lora-ml", 1, "1", {"a": 1.0, "c": 1.0}, 4),  # no SR rank-1 record
    ]
    pairs = persona_pairs(records, "4")
    assert pairs == [(0, "a", 0.75, 0.5), (0, "b", 0.25, 0.25),
                     (1, "a", 0.25, 0.5), (1, "c", 0.5, 1.0)]
    assert persona_pairs(records, "1") == []


def test_run_provenance_gathers_what_ran_where_and_when(tmp_path: Path) -> None:
    records = [{**r, "wall_s": 2.0, "retrain_wall_s": 100.0,
                "provenance": {"device": "cpu:x", "git_commit": f"c{r['seed'] % 2}",
                               "time_utc": f"2026-01-0{r['seed'] + 1}T00:00:00+00:00",
                               "torch": "2.13.0"}}
               for r in RECORDS]
    write_run(tmp_path / "run", 4, records)
    p = run_provenance(load_run(tmp_path / "run"))
    assert (p["profile"], p["model"], p["T"], p["heldout"]) == ("quick", "tiny-roberta", 4, 4)
    assert p["methods"] == ["standard", "lora-ml"] and p["seeds"] == [0, 1, 2]
    assert p["devices"] == ["cpu:x"] and p["commits"] == ["c0", "c1"]
    assert (p["first_utc"], p["last_utc"]) == ("2026-01-01T00:00:00+00:00",
                                               "2026-01-03T00:00:00+00:00")
    assert p["versions"]["torch"] == ["2.13.0"] and p["evaluations"] == len(RECORDS)
    # retraining counted once per cell (the three SR rank-0 records), evaluations each
    assert p["compute_hours"] == round((3 * 100.0 + 2.0 * len(RECORDS)) / 3600, 2)
    assert "commit c0, c1" in describe_run(load_run(tmp_path / "run"))


def test_persona_pair_plot_counts_points_above_and_below() -> None:
    import matplotlib.pyplot as plt

    from metanb.plots.results import plot_persona_pairs

    pairs = [(0, "a", 0.75, 0.5), (0, "b", 0.25, 0.25), (1, "a", 0.25, 0.5), (1, "c", 0.9, 0.1)]
    ax = plot_persona_pairs(pairs)
    offsets = ax.collections[0].get_offsets()
    assert offsets.shape == (4, 2)
    assert abs(offsets[:, 0] - [0.5, 0.25, 0.5, 0.1]).max() < 0.01  # jitter < 1 %
    assert "above: 2\nbelow: 1\ntied: 1" in [t.get_text() for t in ax.texts]
    plt.close("all")
    with pytest.raises(ValueError, match="no persona pairs"):
        plot_persona_pairs([])


def test_accuracy_vs_tasks_plot_draws_each_methods_means() -> None:
    import matplotlib.pyplot as plt

    from metanb.plots.results import plot_accuracy_vs_tasks

    points = {4: summarize(RECORDS), 8: summarize([{**r, "accuracy": r["accuracy"] / 2}
                                                  for r in RECORDS])}
    ax = plot_accuracy_vs_tasks(points, "4", chance=0.25)
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert list(lines["SR (standard retraining)"].get_ydata()) == pytest.approx([0.64, 0.32])
    # lora-ml ran at two retraining ranks: one line each
    assert list(lines["LoRA-ML (r=2)"].get_ydata()) == pytest.approx([0.75, 0.375])
    assert list(lines["LoRA-ML (r=8)"].get_ydata()) == pytest.approx([0.10, 0.05])
    assert ax.get_xscale() == "log"
    plt.close("all")


def test_describe_run_of_a_sweep_lists_every_T(tmp_path: Path) -> None:
    write_run(tmp_path / "T4", 4, RECORDS)
    write_run(tmp_path / "T8", 8, RECORDS)
    runs = find_runs(tmp_path)
    assert "T=4, n=" in describe_run(runs[0])
    assert "T=4,8, n=" in describe_run(runs) and "device cpu:test" in describe_run(runs)
    with pytest.raises(MetanbError, match="no runs"):
        describe_run([])


def test_format_paired_shows_interval_tests_and_wins() -> None:
    records = RECORDS + [rec("reptile", s, "4", 0.6 + 0.05 * s) for s in range(3)]
    table = format_paired(records, [("lora-ml", "standard"), ("lora-ml", "reptile")])
    caption, header, rule, *rows = table.splitlines()
    assert caption == ("accuracy differences paired by seed (3 seeds): mean, 95 % t-interval, "
                       "two-sided p of the paired t-test and of the exact sign test, wins")
    assert header.split()[:2] == ["comparison", "fine-tuning"]
    # − standard: 0.11 ± 4.302653 · 0.03786 = [-0.053, +0.273], t(2) = 2.905, p = 0.10;
    # − reptile: +0.10, +0.15, +0.05: mean 0.10, s.e. 0.05/√3, interval [-0.024, +0.224]
    assert rows[0].split() == ["lora-ml", "−", "standard", "4", "+0.110", "[-0.053,", "+0.273]",
                               "0.1", "0.25", "3/3"]
    assert rows[1].split()[:7] == ["lora-ml", "−", "reptile", "4", "+0.100", "[-0.024,",
                                   "+0.224]"]
    losing = format_paired(records, [("standard", "lora-ml")]).splitlines()[3]
    assert losing.split()[4:] == ["-0.110", "[-0.273,", "+0.053]", "0.1", "0.25", "0/3"]
    with pytest.raises(MetanbError, match="no paired comparison"):
        format_paired(records, [("lora-ml", "nonexistent")])


def test_format_provenance_has_one_row_per_run(tmp_path: Path) -> None:
    stamped = [{**r, "wall_s": 36.0, "retrain_wall_s": 0.0,
                "provenance": {"device": "cpu:x", "git_commit": "0123456789abcdef",
                               "time_utc": "2026-11-24T11:00:00+00:00"}} for r in RECORDS]
    write_run(tmp_path / "T4", 4, stamped)
    write_run(tmp_path / "T8", 8, stamped)
    lines = format_provenance(find_runs(tmp_path)).splitlines()
    assert lines[0].split() == ["run", "profile", "model", "T", "seeds", "methods", "device",
                                "commit", "finished", "hours"]
    assert lines[2].split() == ["T4", "quick", "tiny-roberta", "4", "0,1,2",
                                "standard,lora-ml", "cpu:x", "01234567", "2026-11-24", "0.11"]
    assert lines[3].split()[:4] == ["T8", "quick", "tiny-roberta", "8"]


def test_gains_by_tasks_and_the_sweep_table(tmp_path: Path) -> None:
    write_run(tmp_path / "b", 8, [{**r, "accuracy": r["accuracy"] / 2} for r in RECORDS])
    write_run(tmp_path / "a", 4, RECORDS)
    gains = gains_by_tasks(find_runs(tmp_path))
    assert list(gains) == [4, 8]  # sorted by T, not by folder name
    assert gains[8]["4"].difference.mean == pytest.approx(0.055)
    lines = format_sweep(gains).splitlines()
    assert lines[0] == ("accuracy gain paired by seed, mean ± s.e. over 3 seeds; "
                        "* = the 95 % t-interval excludes 0")
    assert lines[1].split() == ["T", "\\", "fine-tuning", "4", "seeds"]
    assert lines[3].split() == ["4", "+0.110", "±", "0.038", "3"]  # t(2) = 2.9 < 4.30: no *
    assert lines[4].split() == ["8", "+0.055", "±", "0.019", "3"]
    sure = {4: paired_gain([rec("standard", s, "4", 0.5) for s in range(3)]
                           + [rec("lora-ml", s, "4", 0.7 + 0.01 * s, 2) for s in range(3)])}
    assert format_sweep(sure).splitlines()[3].split() == ["4", "+0.210", "±", "0.006*", "3"]
    write_run(tmp_path / "c", 4, RECORDS)
    with pytest.raises(MetanbError, match="must differ in tasks.retrain"):
        gains_by_tasks(find_runs(tmp_path))


def test_default_comparisons_follow_the_methods_present() -> None:
    assert default_comparisons(RECORDS) == [("lora-ml", "standard")]
    with_reptile = RECORDS + [rec("reptile", 0, "4", 0.5)]
    assert default_comparisons(with_reptile) == [
        ("lora-ml", "standard"), ("lora-ml", "reptile"), ("reptile", "standard")]
    assert default_comparisons([rec("standard", 0, "4", 0.5)]) == []


def test_short_commit_keeps_the_dirty_mark() -> None:
    from metanb.experiments.results import short_commit

    assert short_commit("0123456789abcdef0123") == "0123456789ab"
    assert short_commit("0123456789abcdef0123-dirty", 8) == "01234567-dirty"


def based(record: dict, loss: float, wall: float, commit: str, day: str) -> dict:
    return {**record, "retrain_final_loss": loss, "retrain_wall_s": wall,
            "provenance": {"git_commit": commit, "time_utc": f"2026-12-{day}T13:00:00+00:00"}}


def test_one_base_per_cell_flags_a_cell_fine_tuned_from_two_bases() -> None:
    records = ([based(rec("standard", 0, lab, 0.5), 0.29, 23.5, "aaa", "01") for lab in "014"]
               + [based(rec("lora-ml", 1, "0", 0.3, 4), 0.005904, 27.224, "fec0e09e", "01")]
               + [based(rec("lora-ml", 1, lab, 0.6, 4), 0.006181, 65.829, "dbb68bab-dirty",
                        "02") for lab in ("1", "4", "head")])
    assert check_one_base_per_cell(records) == [
        "warning: cell lora-ml r=4 seed 1 mixes 2 retrained bases (re-run it): "
        "fine-tuning 0 from a base with loss 0.005904, 27.224 s, commit fec0e09e, 2026-12-01; "
        "fine-tuning 1,4,head from a base with loss 0.006181, 65.829 s, "
        "commit dbb68bab-dirty, 2026-12-02"]
    # one base, evaluated by two commits (a resumed cell that reloaded its base): fine
    resumed = [based(rec("standard", 0, lab, 0.5), 0.29, 23.5, c, "01")
               for lab, c in (("0", "aaa"), ("4", "bbb"))]
    assert check_one_base_per_cell(resumed) == []
    # different seeds or retraining ranks are different cells, not a conflict
    assert check_one_base_per_cell([based(rec("lora-ml", 0, "0", 0.3, 4), 0.1, 1.0, "a", "01"),
                                    based(rec("lora-ml", 0, "0", 0.3, 8), 0.2, 2.0, "a", "01"),
                                    based(rec("lora-ml", 1, "0", 0.3, 4), 0.3, 3.0, "a", "01")]
                                   ) == []


def test_one_base_per_cell_compares_the_base_digest() -> None:
    """Two retrainings can agree on loss and wall time to the digit; their sha256 cannot."""
    def digest(record: dict, sha: str) -> dict:
        return {**based(record, 0.25, 30.0, "abc", "01"), "base_sha256": sha}

    same = [digest(rec("lora-ml", 0, lab, 0.5, 4), "a" * 64) for lab in "014"]
    assert check_one_base_per_cell(same) == []
    mixed = same[:1] + [digest(rec("lora-ml", 0, lab, 0.5, 4), "b" * 64) for lab in "14"]
    assert check_one_base_per_cell(mixed) == [
        "warning: cell lora-ml r=4 seed 0 mixes 2 retrained bases (re-run it): "
        f"fine-tuning 0 from a base with sha256 {'a' * 12}, loss 0.25, 30 s, commit abc, "
        f"2026-12-01; fine-tuning 1,4 from a base with sha256 {'b' * 12}, loss 0.25, 30 s, "
        "commit abc, 2026-12-01"]


def test_the_committed_quick_run_has_exactly_the_known_mixed_cell() -> None:
    run = load_run(Path(__file__).parents[1] / "book" / "results" / "quick")
    warnings = check_one_base_per_cell(run.records)
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: cell lora-ml r=4 seed 1 mixes 2 retrained bases")
    assert "fine-tuning 0 from a base with loss 0.00590351" in warnings[0]
    report = format_report([run])
    assert warnings[0] in report.splitlines()[1:3]  # right under the run's description
    assert report_json([run])["runs"][0]["warnings"] == warnings


def test_report_of_a_sweep_is_json_ready(tmp_path: Path) -> None:
    import json

    write_run(tmp_path / "T4", 4, RECORDS)
    write_run(tmp_path / "T8", 8, [{**r, "accuracy": r["accuracy"] / 2} for r in RECORDS])
    runs = find_runs(tmp_path)
    payload = json.loads(json.dumps(report_json(runs)))
    assert payload["gain_vs_T"]["8"]["4"]["difference"]["mean"] == pytest.approx(0.055)
    assert payload["runs"][0]["warnings"] == []
    text = format_report(runs)
    assert "LoRA-ML − SR by T\naccuracy gain paired by seed" in text
    assert text.count("held-out accuracy, mean ± s.e.") == 2


def bar_halves(container) -> list[float]:
    """Half-lengths of the vertical error bars of an errorbar container."""
    segments = container.lines[2][0].get_segments()
    return [float(seg[1][1] - seg[0][1]) / 2 for seg in segments]


def test_error_bars_are_one_standard_error_and_the_legend_says_so() -> None:
    import matplotlib.pyplot as plt

    from metanb.plots.results import plot_accuracy_vs_rank, plot_gain_vs_tasks

    rows = summarize([r for r in RECORDS if r["retrain_rank"] != 8])
    ax = plot_accuracy_vs_rank(rows)
    sr = next(c for c in ax.containers if c.get_label().startswith("SR"))
    assert bar_halves(sr) == pytest.approx([0.1 / math.sqrt(3), rows[1].se])
    assert ax.get_legend().get_title().get_text() == (
        "mean ± s.e. over 1–3 seeds (n = 1: no s.e.)")
    plt.close("all")
    ax = plot_gain_vs_tasks({4: paired_gain(RECORDS), 8: paired_gain(RECORDS)})
    assert bar_halves(ax.containers[0]) == pytest.approx([GAIN_SE, GAIN_SE])
    assert ax.get_legend().get_title().get_text() == "paired by seed, mean ± s.e. over 3 seeds"
    plt.close("all")


def test_linear_bands_are_one_standard_error_over_seeds() -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from metanb.plots.linear import mean_band

    _, ax = plt.subplots()
    values = np.array([[1.0, 4.0], [3.0, 4.0], [5.0, 7.0]])
    assert mean_band(ax, [1, 2], values, "k", "x") == 3
    band = ax.collections[0].get_paths()[0].vertices
    se = values.std(0, ddof=1) / math.sqrt(3)  # ddof = 1: not the population std
    assert band[:, 1].max() == pytest.approx((values.mean(0) + se).max())
    assert band[:, 1].min() == pytest.approx((values.mean(0) - se).min())
    mean_band(ax, [1, 2], values[:1], "k", "one seed")
    assert len(ax.collections) == 1  # a single seed draws its line, no band
    plt.close("all")


def test_cli_results_prints_the_mixed_base_warning(tmp_path: Path, capsys) -> None:
    import shutil

    from metanb.cli import main

    run = tmp_path / "quick"
    run.mkdir()
    for name in (CONFIG_FILE, RESULTS_FILE):
        shutil.copyfile(Path(__file__).parents[1] / "book" / "results" / "quick" / name,
                        run / name)
    assert main(["results", str(run), "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("warning:")] == [
        line for line in check_one_base_per_cell(load_run(run).records)]


def test_a_sweep_over_the_support_size_is_reported_by_n(tmp_path: Path) -> None:
    import json

    """Run folders that differ only in tasks.support: the report tabulates the gain by n."""
    from metanb.experiments.results import gains_by_support

    base = ExperimentConfig().override(["seeds=[0,1]", "finetune.ranks=[4]"])
    for n, gain in ((4, 0.1), (16, 0.3)):
        folder = tmp_path / f"n{n:02d}"
        folder.mkdir()
        base.override({"tasks.support": n}).save(folder / CONFIG_FILE)
        lines = [rec(m, s, "4", 0.5 + (gain + 0.01 * s if m == "lora-ml" else 0.0),
                     4 if m == "lora-ml" else None)
                 for m in ("standard", "lora-ml") for s in (0, 1)]
        (folder / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    runs = find_runs(tmp_path)
    gains = gains_by_support(runs)
    assert list(gains) == [4, 16]
    assert gains[16]["4"].difference.mean == pytest.approx(0.305)
    report = format_report(runs)
    assert "LoRA-ML − SR by support size n" in report and "n \\ fine-tuning" in report
    assert set(report_json(runs)["gain_vs_n"]) == {4, 16}
    with pytest.raises(MetanbError, match="must differ in tasks.support"):
        gains_by_support([runs[0], runs[0]])


def test_growth_across_a_nested_sweep_is_paired_by_seed(tmp_path: Path) -> None:
    personas = {"p1": 0.0, "p2": 0.0}

    def at(T: int) -> list[dict]:  # SR gains 0.1 per doubling of T, LoRA-ML 0.2 (+0.01 seed)
        k = {2: 0, 4: 1, 8: 2}[T]
        return [{**persona_rec("standard", s, "4", personas), "accuracy": 0.3 + 0.1 * k}
                for s in range(3)] + [
                {**persona_rec("lora-ml", s, "4", personas, 4),
                 "accuracy": 0.3 + (0.2 + 0.01 * s) * k} for s in range(3)]

    for T in (8, 2, 4):
        write_run(tmp_path / f"T{T}", T, at(T))
    by_T = {run.config.tasks.retrain: run for run in find_runs(tmp_path)}
    assert growth(by_T, "lora-ml", "4", 2, 8) == pytest.approx({0: 0.4, 1: 0.42, 2: 0.44})
    lines = growth_table(by_T, "4", "T").splitlines()
    assert lines[0].startswith("accuracy after rank-4 LoRA fine-tuning gained from T = a to T = b")
    assert lines[1].split()[:4] == ["a", "→", "b", "SR"]
    assert lines[3].split()[:4] == ["2", "→", "4", "+0.100"]
    assert lines[5].split()[:4] == ["2", "→", "8", "+0.200"]  # the first → last row
    assert lines[5].split()[-1] == "3/3"  # LoRA-ML grew more than SR in every seed
    # a sweep whose seeds see other held-out personas at another T is refused
    moved = [{**r, "accuracy_per_persona": {"p3": 0.0}} for r in at(4)]
    write_run(tmp_path / "moved" / "T4", 4, moved)
    write_run(tmp_path / "moved" / "T2", 2, at(2))
    by_T = {run.config.tasks.retrain: run for run in find_runs(tmp_path / "moved")}
    with pytest.raises(MetanbError, match="not paired by seed .* tasks.nested=true"):
        growth_table(by_T, "4", "T")
