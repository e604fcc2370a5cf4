"""Figures for chapters 1-2: the retrain-then-adapt pipeline and what a rank-k step can reach.

Three pictures carry the argument of the first chapter:

- ``plot_singular_values``: the spectra of a few matrices side by side, so a reader *sees* that
  one task's shift has k non-zero singular values while the average of T shifts has up to Tk;
- ``plot_rank_fit_error``: the error of the best rank-r fit against r (Eckart-Young), which is
  zero from r = rank onwards and a floor before it;
- ``plot_pipeline``: pretraining -> retraining on T tasks (SR or LoRA-ML) -> LoRA adaptation;
- ``plot_risk_convergence`` (chapter 2): the empirical risk on n fresh samples against n, next to
  the population value it converges to, ``σ² d + ‖M − M_t‖_F²``.

The functions only draw: the numbers (singular values, fit errors) are computed by the caller,
usually with ``torch.linalg.svdvals`` and ``metanb.linear.best_rank_r_fit``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from metanb.errors import MetanbError
from metanb.plots.style import method_color, series_hatch, series_style

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor

# the largest number of task chips the pipeline drawing has room for
MAX_DRAWN_TASKS = 8


def _axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    """Use the caller's axes when given (so figures compose), else a fresh figure."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    """A finite 1-D float array, or a one-line error naming the offending series."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise MetanbError(
            f"{name!r}: expected a non-empty 1-D sequence of numbers, got shape {array.shape}; "
            "pass e.g. torch.linalg.svdvals(matrix)"
        )
    if not np.all(np.isfinite(array)):
        raise MetanbError(f"{name!r}: contains NaN or infinite values")
    return array


def _check_series(series: Mapping[str, ArrayLike], what: str) -> dict[str, np.ndarray]:
    if not isinstance(series, Mapping) or len(series) == 0:
        raise MetanbError(f"expected a non-empty mapping label -> {what}, got {series!r}")
    return {str(label): _as_vector(values, str(label)) for label, values in series.items()}


def plot_singular_values(
    spectra: Mapping[str, ArrayLike],
    *,
    top: int | None = None,
    mark_rank: int | None = None,
    colors: Mapping[str, str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Grouped bars of the singular values of several matrices (one colour per matrix).

    spectra: label -> singular values (any order; drawn largest first). ``top`` keeps the
    first ``top`` values of each, ``mark_rank`` draws a dashed line after the k-th value: a
    rank-k update can only reproduce what lies to the left of it.
    """
    data = _check_series(spectra, "singular values")
    for label, values in data.items():
        if np.any(values < 0):
            raise MetanbError(f"{label!r}: singular values cannot be negative")
    if top is not None and top < 1:
        raise MetanbError(f"top must be a positive number of singular values, got {top}")
    if mark_rank is not None and mark_rank < 1:
        raise MetanbError(f"mark_rank must be a positive rank, got {mark_rank}")
    data = {label: np.sort(v)[::-1][:top] for label, v in data.items()}

    fig, ax = _axes(ax)
    width = 0.8 / len(data)
    for j, (label, values) in enumerate(data.items()):
        index = np.arange(1, values.size + 1)
        offset = (j - (len(data) - 1) / 2) * width
        color = (colors or {}).get(label, series_style(j)["color"])
        ax.bar(index + offset, values, width=width, label=label, color=color,
               hatch=series_hatch(j), edgecolor="white", linewidth=0.5)
    if mark_rank is not None:
        ax.axvline(mark_rank + 0.5, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"$k={mark_rank}$", xy=(mark_rank + 0.5, 1.0), xycoords=("data", "axes fraction"),
            xytext=(4, -12), textcoords="offset points",
        )
    longest = max(v.size for v in data.values())
    ax.set_xticks(np.arange(1, longest + 1, max(1, math.ceil(longest / 12))))
    ax.set_xlabel("index $i$ (largest first)")
    ax.set_ylabel(r"singular value $\sigma_i$")
    ax.legend()
    return fig


def plot_rank_fit_error(
    errors: Mapping[str, ArrayLike],
    *,
    ranks: Sequence[int] | None = None,
    mark_rank: int | None = None,
    ylabel: str = r"relative error $\|\Delta - \Delta_r\|_F / \|\Delta\|_F$",
    colors: Mapping[str, str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The error of the best rank-r fit against r, one line per matrix.

    errors: label -> error at each rank of ``ranks`` (default 0, 1, 2, ...). Every series must
    have one value per rank. ``mark_rank`` draws the adapter's rank k as a dashed line.
    """
    data = _check_series(errors, "errors")
    length = {v.size for v in data.values()}
    if ranks is None:
        if len(length) != 1:
            raise MetanbError("series have different lengths; pass `ranks` for each value")
        rank_axis = np.arange(length.pop())
    else:
        rank_axis = np.asarray(list(ranks), dtype=int)
        if rank_axis.ndim != 1 or np.any(rank_axis < 0):
            raise MetanbError(f"ranks must be non-negative integers, got {list(ranks)!r}")
    for label, values in data.items():
        if values.size != rank_axis.size:
            raise MetanbError(
                f"{label!r}: {values.size} errors for {rank_axis.size} ranks; give one per rank"
            )
    if mark_rank is not None and mark_rank < 0:
        raise MetanbError(f"mark_rank must be a non-negative rank, got {mark_rank}")

    fig, ax = _axes(ax)
    for j, (label, values) in enumerate(data.items()):
        style = series_style(j)
        if colors and label in colors:
            style["color"] = colors[label]
        ax.plot(rank_axis, values, label=label, **style)
    if mark_rank is not None:
        ax.axvline(mark_rank, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"adapter rank $k={mark_rank}$", xy=(mark_rank, 1.0),
            xycoords=("data", "axes fraction"), xytext=(4, -12), textcoords="offset points",
        )
    ax.set_xlabel("rank $r$ of the correction")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def plot_risk_convergence(
    samples: Sequence[int],
    empirical: Mapping[str, ArrayLike],
    population: Mapping[str, float],
    *,
    relative: bool = False,
    colors: Mapping[str, str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Empirical risk on n fresh samples against n (log scale), one line per model.

    empirical: label -> risk at each sample size of ``samples``; population: label -> the limit
    ``σ² d + ‖M − M_t‖_F²``. By default each line has its limit as a dashed horizontal line of
    the same colour. With ``relative=True`` the plot shows ``|empirical − limit| / limit`` on
    log-log axes instead, with a dotted ``n^(-1/2)`` guide: the rate of the law of large numbers.
    """
    data = _check_series(empirical, "empirical risks")
    sizes = np.asarray(list(samples), dtype=float)
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 1):
        raise MetanbError(f"samples must be positive sample sizes, got {list(samples)!r}")
    missing = [label for label in data if label not in population]
    if missing:
        raise MetanbError(f"no population value for {missing}; give one per empirical series")
    for label, values in data.items():
        if values.size != sizes.size:
            raise MetanbError(
                f"{label!r}: {values.size} risks for {sizes.size} sample sizes; give one per size"
            )
    limits = {label: float(population[label]) for label in data}
    if relative and any(limit <= 0 for limit in limits.values()):
        raise MetanbError("relative=True needs positive population values (they divide the gap)")

    fig, ax = _axes(ax)
    for j, (label, values) in enumerate(data.items()):
        # solid lines for the measured risks (their limits are dashed), told apart by colour
        # and marker
        style = series_style(j)
        color = (colors or {}).get(label, style["color"])
        if relative:
            gap = np.abs(values - limits[label]) / limits[label]
            ax.plot(sizes, gap, marker=style["marker"], label=label, color=color)
        else:
            (line,) = ax.plot(sizes, values, marker=style["marker"], label=label, color=color)
            ax.axhline(limits[label], color=line.get_color(), linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("number of fresh samples $n$")
    if relative:
        ax.set_yscale("log")
        ax.plot(sizes, sizes ** -0.5, color="black", linestyle=":", label=r"$n^{-1/2}$")
        ax.set_ylabel("relative gap to the population risk")
        ax.legend()
    else:
        ax.set_ylabel(r"empirical risk $\frac{1}{n}\sum_i \|y_i - M x_i\|^2$")
        ax.legend(title=r"dashed: $\sigma^2 d + \|M - M_t\|_F^2$")
    return fig


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str,
         fontsize: float = 9.5, alpha: float = 0.9) -> FancyBboxPatch:
    """A rounded box centred at (x, y) with centred text; the diagram's building block."""
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.03",
        facecolor=color, edgecolor="#333333", linewidth=1.0, alpha=alpha,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, wrap=True)
    return patch


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                 color="#333333", linewidth=1.2))


def plot_pipeline(*, tasks: int = 3, ax: Axes | None = None) -> Figure:
    """The three stages: pretraining -> retraining on ``tasks`` tasks -> rank-k LoRA adaptation.

    The retraining stage is drawn twice, as SR and as LoRA-ML, in the book's method colours;
    both hand one base matrix to the adaptation stage. ``tasks`` small chips stand for the
    retraining tasks (at most ``MAX_DRAWN_TASKS`` fit).
    """
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise MetanbError(f"tasks must be a positive integer, got {tasks!r}")
    if tasks > MAX_DRAWN_TASKS:
        raise MetanbError(
            f"the diagram has room for at most {MAX_DRAWN_TASKS} task chips, got tasks={tasks}; "
            "the drawing is schematic, so a small number reads better"
        )
    fig, ax = _axes(ax, figsize=(10.0, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.set_axis_off()

    _box(ax, 1.2, 2.1, 2.0, 1.3, "1. Pretraining\nlarge generic corpus\n" r"$\to W_0$",
         "#eeeeee")
    ax.text(5.0, 4.0, f"2. Retraining on $T={tasks}$ tasks", ha="center", fontsize=11)
    _box(ax, 5.0, 2.95, 3.6, 0.95,
         "standard retraining (SR)\n" r"$\min_A\ \sum_t L_t(A)$",
         method_color("standard"), alpha=0.45)
    _box(ax, 5.0, 1.65, 3.6, 0.95,
         "LoRA-ML\n" r"$\min_{A,\,U_1..U_T}\ \sum_t L_t(A + U_t U_t^\top)$",
         method_color("lora-ml"), alpha=0.45)
    chip_w = min(0.4, 3.4 / tasks - 0.05)
    left = 5.0 - (tasks * chip_w + (tasks - 1) * 0.05) / 2 + chip_w / 2
    for t in range(tasks):
        _box(ax, left + t * (chip_w + 0.05), 0.75, chip_w, 0.4, f"$t_{{{t + 1}}}$",
             "#ffffff", fontsize=8)
    ax.text(5.0, 0.2, "data of each retraining task; LoRA-ML's adapters are thrown away",
            ha="center", fontsize=8.5, style="italic")
    _box(ax, 8.8, 2.1, 2.2, 1.5,
         "3. Adaptation\nnew task, $n$ samples\n" r"rank-$k$ LoRA: $\hat A + BA$",
         "#dde8f5")
    _arrow(ax, (2.2, 2.1), (3.2, 2.95))
    _arrow(ax, (2.2, 2.1), (3.2, 1.65))
    _arrow(ax, (6.8, 2.95), (7.7, 2.2))
    _arrow(ax, (6.8, 1.65), (7.7, 2.0))
    ax.text(7.25, 2.1, r"$\hat A$", ha="center", va="center", fontsize=11)
    return fig
