"""Figures of the language-model experiment (chapters 5 and 6, ``metanb results``).

Each function takes summary data from :mod:`metanb.experiments.results` and an optional
``ax``, draws, and returns the Axes; none calls ``plt.show()``. Every error bar is one
standard error of the mean over seeds (:mod:`metanb.stats`), and the legend's title says so
and over how many seeds.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from metanb.experiments.results import SummaryRow, finetune_name, finetune_order
from metanb.plots.style import method_color, series_style
from metanb.stats import PairedComparison, se_label

# fine-tuning labels in the order they take the shared series styles
FINETUNE_STYLE_ORDER = ("1", "4", "8", "16", "head", "0")


def method_label(method: str) -> str:
    """How figures name a method: its registry label (the name itself if unregistered)."""
    from metanb.retrain.methods import METHODS

    return METHODS[method].display if method in METHODS else method


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else plt.subplots()[1]


def plot_accuracy_vs_rank(rows: Sequence[SummaryRow], ax: Axes | None = None,
                          caption: str | None = None, chance: float | None = None) -> Axes:
    """Accuracy (mean ± s.e. over seeds) against fine-tuning rank, one line per method.

    Rank 0 is the retrained base without fine-tuning; ``head`` (last-layer fine-tuning) sits
    at the right as a separate point. Ranks are evenly spaced (categorical axis).
    """
    ax = _axes(ax)
    labels = sorted({r.finetune for r in rows}, key=finetune_order)
    xpos = {lab: i for i, lab in enumerate(labels)}
    series: dict[str, list[SummaryRow]] = {}
    for r in rows:
        series.setdefault(r.method_label, []).append(r)
    offsets = _offsets(len(series))
    for group, dx in zip(series.values(), offsets, strict=True):
        color = method_color(group[0].method)
        label = method_label(group[0].method)
        if group[0].retrain_rank is not None and len({r.retrain_rank for r in rows
                                                       if r.method == group[0].method}) > 1:
            label += f" (r={group[0].retrain_rank})"
        lora = [r for r in group if r.finetune != "head"]
        ax.errorbar([xpos[r.finetune] + dx for r in lora], [r.mean for r in lora],
                    yerr=[r.se or 0.0 for r in lora], color=color, marker="o", capsize=3,
                    label=label)
        for r in group:
            if r.finetune == "head":
                ax.errorbar([xpos["head"] + dx], [r.mean], yerr=[r.se or 0.0], color=color,
                            marker="s", capsize=3, linestyle="none")
    if chance is not None:
        ax.axhline(chance, color="#999999", linestyle=":", label=f"chance (1/{round(1 / chance)})")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("fine-tuning LoRA rank (0 = none; head = last layer only)")
    ax.set_ylabel("held-out accuracy")  # hits@1 for convai2, 8-vs-9 accuracy for vision
    _legend(ax, se_label([r.n for r in rows]))
    _caption(ax, caption)
    return ax


def plot_gain_vs_tasks(points: Mapping[int, Mapping[str, PairedComparison]],
                       labels: Sequence[str] | None = None, ax: Axes | None = None,
                       caption: str | None = None) -> Axes:
    """LoRA-ML minus SR accuracy (paired by seed, mean ± s.e.) against the number of
    retraining tasks T.

    ``points[T][label]`` is the comparison :func:`metanb.experiments.results.paired_gain`
    returns for the run with T tasks (:func:`~metanb.experiments.results.gains_by_tasks`);
    one line per fine-tuning label (default: every label present).
    """
    ax = _axes(ax)
    Ts = sorted(points)
    present = sorted({lab for p in points.values() for lab in p}, key=finetune_order)
    chosen = list(labels) if labels is not None else present
    for lab in chosen:
        xs = [T for T in Ts if lab in points[T]]
        # one style per fine-tuning label, whatever else the figure shows
        style = series_style(FINETUNE_STYLE_ORDER.index(lab) if lab in FINETUNE_STYLE_ORDER
                             else len(FINETUNE_STYLE_ORDER))
        ax.errorbar(xs, [points[T][lab].difference.mean for T in xs],
                    yerr=[points[T][lab].difference.se or 0.0 for T in xs], capsize=3, **style,
                    label="no fine-tuning" if lab == "0" else (
                        "last layer" if lab == "head" else f"LoRA rank {lab}"))
    ax.axhline(0.0, color="#999999", linestyle=":")
    if Ts and Ts[0] > 0 and Ts[-1] / Ts[0] >= 8:  # doublings of T read best on a log axis
        ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.set_xlabel("retraining personas T")
    ax.set_ylabel("accuracy gain, LoRA-ML − SR")
    ns = [points[T][lab].n for lab in chosen for T in Ts if lab in points[T]]
    _legend(ax, "paired by seed, " + se_label(ns))
    _caption(ax, caption)
    return ax


def plot_persona_pairs(pairs: Sequence[tuple[int, str, float, float]], ax: Axes | None = None,
                       method: str = "lora-ml", baseline: str = "standard",
                       title: str | None = None) -> Axes:
    """One point per (seed, held-out persona): ``method``'s accuracy (y) against
    ``baseline``'s (x), from :func:`metanb.experiments.results.persona_pairs`.

    Points above the diagonal are personas where ``method``'s base adapted better. Accuracies
    take few distinct values (a query set holds a few dozen examples), so points are jittered
    by less than half a query example to keep coincident ones visible.
    """
    import numpy as np

    ax = _axes(ax)
    if not pairs:
        raise ValueError("no persona pairs to plot")
    x = np.array([p[3] for p in pairs])
    y = np.array([p[2] for p in pairs])
    jitter = np.random.default_rng(0).uniform(-0.006, 0.006, size=(2, len(pairs)))
    above = int((y > x).sum())
    below = int((y < x).sum())
    ax.scatter(x + jitter[0], y + jitter[1], s=18, alpha=0.7, color=method_color(method),
               edgecolor="none")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{method_label(baseline)} accuracy")
    ax.set_ylabel(f"{method_label(method)} accuracy")
    ax.text(0.03, 0.97, f"above: {above}\nbelow: {below}\ntied: {len(pairs) - above - below}",
            transform=ax.transAxes, va="top", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_accuracy_vs_tasks(points: Mapping[int, Sequence[SummaryRow]], label: str,
                           ax: Axes | None = None, caption: str | None = None,
                           chance: float | None = None) -> Axes:
    """Accuracy (mean ± s.e. over seeds) at one fine-tuning ``label`` against the number of
    retraining tasks T, one line per method; ``points[T]`` are the summary rows of the run
    with T tasks."""
    ax = _axes(ax)
    Ts = sorted(points)
    series = list(dict.fromkeys((r.method, r.retrain_rank) for T in Ts for r in points[T]))
    several = {m for m, _ in series if sum(1 for n, _ in series if n == m) > 1}
    offsets = _offsets(len(series), width=0.02)
    for (method, rrank), dx in zip(series, offsets, strict=True):
        rows = {T: r for T in Ts for r in points[T]
                if (r.method, r.retrain_rank) == (method, rrank) and r.finetune == label}
        xs = [T for T in Ts if T in rows]
        name = method_label(method) + (f" (r={rrank})" if method in several else "")
        ax.errorbar([T * (1 + dx) for T in xs], [rows[T].mean for T in xs],
                    yerr=[rows[T].se or 0.0 for T in xs], color=method_color(method),
                    marker="o", capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="#999999", linestyle=":", label=f"chance (1/{round(1 / chance)})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.set_xlabel("retraining personas T")
    ax.set_ylabel(f"held-out accuracy, {finetune_name(label)}")
    _legend(ax, se_label([r.n for T in Ts for r in points[T] if r.finetune == label]))
    _caption(ax, caption)
    return ax


def plot_retraining_loss(histories: Mapping[str, Sequence[Mapping[str, float]]],
                         ax: Axes | None = None, smooth: int = 10) -> Axes:
    """Training loss against step for each method (``RetrainResult.history``), smoothed.

    The curves are not comparable as *quality*: LoRA-ML's loss is that of base + each task's
    own adapter, SR's that of the base alone. What they show is how much of the retraining
    data each parametrisation can fit.
    """
    ax = _axes(ax)
    for method, history in histories.items():
        steps = [h["step"] for h in history]
        losses = [h["loss"] for h in history]
        ax.plot(steps, _running_mean(losses, max(1, smooth)), color=method_color(method),
                label=method_label(method))
    ax.set_xlabel("retraining step")
    ax.set_ylabel(f"training loss (running mean of {smooth})")
    ax.legend()
    return ax


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _legend(ax: Axes, bars: str) -> None:
    """The legend, titled with what the error bars are (``mean ± s.e. over 5 seeds``)."""
    ax.legend(title=bars, title_fontsize="small")


def _caption(ax: Axes, caption: str | None, width: int = 95) -> None:
    """Provenance line(s) above the plot: profile, model, data, device."""
    if caption:
        ax.set_title(textwrap.fill(caption, width), fontsize=7, loc="left")


def _offsets(k: int, width: float = 0.08) -> list[float]:
    """Small horizontal shifts so error bars of different methods do not overlap."""
    return [(i - (k - 1) / 2) * width for i in range(k)]
