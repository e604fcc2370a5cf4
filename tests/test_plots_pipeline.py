"""Chapter 1-2 figures: they draw exactly the numbers they are given, and refuse bad input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.patches import FancyBboxPatch

from metanb import MetanbError
from metanb.plots.pipeline import (
    MAX_DRAWN_TASKS,
    plot_pipeline,
    plot_rank_fit_error,
    plot_risk_convergence,
    plot_singular_values,
)
from metanb.plots.style import method_color


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bar_heights(ax) -> list[list[float]]:
    """Heights of the bars of each bar container, in drawing order."""
    return [[bar.get_height() for bar in container] for container in ax.containers]


def test_bar_heights_are_the_singular_values_largest_first():
    matrix = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sv = torch.linalg.svdvals(matrix)
    fig = plot_singular_values({"M": sv, "reversed": sv.flip(0).tolist()})
    (ax,) = fig.axes
    heights = bar_heights(ax)
    assert len(heights) == 2
    np.testing.assert_allclose(heights[0], sv.numpy())
    np.testing.assert_allclose(heights[1], sv.numpy())  # drawn sorted, whatever the input order
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["M", "reversed"]


def test_top_keeps_the_largest_values_and_mark_rank_draws_the_cut():
    fig = plot_singular_values({"a": [1.0, 5.0, 3.0, 0.5]}, top=2, mark_rank=1)
    (ax,) = fig.axes
    assert bar_heights(ax) == [[5.0, 3.0]]
    (line,) = ax.get_lines()
    assert line.get_xdata()[0] == pytest.approx(1.5)  # between the 1st and the 2nd value


def test_given_axes_is_used_and_colours_are_honoured():
    fig, (left, right) = plt.subplots(1, 2)
    out = plot_singular_values({"sr": [2.0, 1.0]}, colors={"sr": "#ff0000"}, ax=right)
    assert out is fig
    assert not left.containers
    assert to_rgb(right.containers[0][0].get_facecolor()) == to_rgb("#ff0000")


@pytest.mark.parametrize(
    ("spectra", "message"),
    [
        ({}, "non-empty mapping"),
        ({"x": [1.0, -0.1]}, "cannot be negative"),
        ({"x": [[1.0, 2.0]]}, "1-D"),
        ({"x": []}, "1-D"),
        ({"x": [1.0, float("nan")]}, "NaN"),
    ],
)
def test_singular_values_bad_input_is_one_clear_error(spectra, message):
    with pytest.raises(MetanbError, match=message):
        plot_singular_values(spectra)


def test_bad_top_or_mark_rank_is_refused():
    with pytest.raises(MetanbError, match="top"):
        plot_singular_values({"x": [1.0]}, top=0)
    with pytest.raises(MetanbError, match="mark_rank"):
        plot_singular_values({"x": [1.0]}, mark_rank=0)


def test_rank_fit_error_plots_one_line_per_series_with_the_given_values():
    errors = {"one task": [1.0, 0.4, 0.0, 0.0], "average": [1.0, 0.8, 0.6, 0.3]}
    fig = plot_rank_fit_error(errors, mark_rank=2)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3  # two series + the rank marker
    for line, values in zip(lines[:2], errors.values(), strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), values)
    assert lines[2].get_xdata()[0] == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(errors)


def test_rank_fit_error_with_explicit_ranks():
    fig = plot_rank_fit_error({"x": torch.tensor([0.5, 0.1])}, ranks=[1, 4])
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), [1, 4])


def test_rank_fit_error_refuses_mismatched_lengths():
    with pytest.raises(MetanbError, match="different lengths"):
        plot_rank_fit_error({"a": [1.0, 0.5], "b": [1.0]})
    with pytest.raises(MetanbError, match="3 errors for 2 ranks"):
        plot_rank_fit_error({"a": [1.0, 0.5, 0.0]}, ranks=[0, 1])
    with pytest.raises(MetanbError, match="non-negative"):
        plot_rank_fit_error({"a": [1.0]}, ranks=[-1])


def test_risk_convergence_draws_each_series_and_its_limit_in_one_colour():
    samples = [10, 100, 1000]
    empirical = {"M_t": [0.9, 1.1, 1.0], "zero": [5.2, 4.8, 5.0]}
    population = {"M_t": 1.0, "zero": 5.0}
    fig = plot_risk_convergence(samples, empirical, population)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 2
    for line, limit, label in zip(solid, dashed, empirical, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), samples)
        np.testing.assert_allclose(line.get_ydata(), empirical[label])
        assert limit.get_ydata()[0] == population[label]
        assert limit.get_color() == line.get_color()


def test_relative_risk_convergence_plots_the_gap_on_log_axes_with_a_guide():
    samples = [10, 1000]
    fig = plot_risk_convergence(samples, {"a": [3.0, 2.2]}, {"a": 2.0}, relative=True)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    gap, guide = ax.get_lines()
    np.testing.assert_allclose(gap.get_ydata(), [0.5, 0.1])
    np.testing.assert_allclose(guide.get_ydata(), [10**-0.5, 1000**-0.5])
    with pytest.raises(MetanbError, match="positive population values"):
        plot_risk_convergence(samples, {"a": [3.0, 2.2]}, {"a": 0.0}, relative=True)


def test_risk_convergence_refuses_inconsistent_input():
    with pytest.raises(MetanbError, match="no population value"):
        plot_risk_convergence([10], {"a": [1.0]}, {"b": 1.0})
    with pytest.raises(MetanbError, match="2 risks for 1 sample sizes"):
        plot_risk_convergence([10], {"a": [1.0, 2.0]}, {"a": 1.0})
    with pytest.raises(MetanbError, match="positive sample sizes"):
        plot_risk_convergence([0, 10], {"a": [1.0, 2.0]}, {"a": 1.0})


@pytest.mark.parametrize("tasks", [1, 3, MAX_DRAWN_TASKS])
def test_pipeline_draws_one_chip_per_task_and_both_methods(tasks):
    fig = plot_pipeline(tasks=tasks)
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    chips = [t for t in texts if t.startswith("$t_{")]
    assert chips == [f"$t_{{{i}}}$" for i in range(1, tasks + 1)]
    assert f"$T={tasks}$" in " ".join(texts)
    faces = {to_rgb(p.get_facecolor()) for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert to_rgb(method_color("standard")) in faces
    assert to_rgb(method_color("lora-ml")) in faces
    assert sum(isinstance(p, FancyBboxPatch) for p in ax.patches) == 4 + tasks


@pytest.mark.parametrize("tasks", [0, -2, MAX_DRAWN_TASKS + 1, True, 2.5])
def test_pipeline_refuses_bad_task_counts(tasks):
    with pytest.raises(MetanbError, match="tasks"):
        plot_pipeline(tasks=tasks)
