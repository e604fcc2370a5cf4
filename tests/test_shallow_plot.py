"""The shallow figure: medians per (method, d), one panel per T, on records built here."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from metanb.errors import MetanbError  # noqa: E402
from metanb.plots.shallow import curves, plot_shallow  # noqa: E402
from metanb.plots.style import method_color  # noqa: E402


def record(method: str, d: int, tasks: int, curve: list[float]) -> dict:
    return {"method": method, "d": d, "tasks": tasks, "curve_iterations": [0, 5, 10],
            "curve": curve}


RECORDS = [record(m, d, T, [s * d, s * d / 2, s * d / 4 + t])
           for m, s in (("sr", 2.0), ("lora-ml", 1.0)) for d in (5, 10) for T in (2, 3)
           for t in (0.0, 0.1, 0.5)]


def test_plot_draws_the_median_of_each_cell_on_a_log_axis():
    fig = plot_shallow(RECORDS)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["T = 2", "T = 3"]
    assert axes[0].get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in axes[1].get_lines()}
    assert sorted(lines) == ["LoRA-ML, d = 10", "LoRA-ML, d = 5", "SR, d = 10", "SR, d = 5"]
    sr10 = lines["SR, d = 10"]
    assert np.allclose(sr10.get_ydata(), [20.0, 10.0, 5.1])  # median of the three trials
    assert sr10.get_color() == method_color("sr")
    assert lines["LoRA-ML, d = 5"].get_color() == method_color("lora-ml")
    assert "median of 3 trials" in axes[0].get_legend().get_title().get_text()


def test_cells_on_different_grids_or_nothing_are_refused():
    mixed = [*RECORDS, {**record("sr", 5, 2, [1.0, 1.0]), "curve_iterations": [0, 7]}]
    with pytest.raises(MetanbError, match="sr d=5 T=2 were measured at different iterations"):
        curves(mixed, "sr", 5, 2)
    with pytest.raises(MetanbError, match="no shallow records to plot"):
        plot_shallow([])
