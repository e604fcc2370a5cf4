"""Figures of the language-model experiment (chapters 5 and 6, ``metanb results``).

Each function takes summary data from :mod:`metanb.experiments.results` and an optional
``ax``, draws, and returns the Axes; none calls ``plt.show()``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from metanb.experiments.results import SummaryRow, finetune_order
from metanb.plots.style import method_color

METHOD_NAMES = {"standard": "SR (standard retraining)", "lora-ml": "LoRA-ML", "reptile": "Reptile"}


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else plt.subplots()[1]


def plot_accuracy_vs_rank(rows: Sequence[SummaryRow], ax: Axes | None = None,
                          caption: str | None = None, chance: float | None = None) -> Axes:
    """Accuracy (mean ± std over seeds) against fine-tuning rank, one line per method.

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
        label = METHOD_NAMES.get(group[0].method, group[0].method)
        if group[0].retrain_rank is not None and len({r.retrain_rank for r in rows
                                                       if r.method == group[0].method}) > 1:
            label += f" (r={group[0].retrain_rank})"
        lora = [r for r in group if r.finetune != "head"]
        ax.errorbar([xpos[r.finetune] + dx for r in lora], [r.mean for r in lora],
                    yerr=[r.std or 0.0 for r in lora], color=color, marker="o", capsize=3,
                    label=label)
        for r in group:
            if r.finetune == "head":
                ax.errorbar([xpos["head"] + dx], [r.mean], yerr=[r.std or 0.0], color=color,
                            marker="s", capsize=3, linestyle="none")
    if chance is not None:
        ax.axhline(chance, color="#999999", linestyle=":", label=f"chance (1/{round(1 / chance)})")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("fine-tuning LoRA rank (0 = none; head = last layer only)")
    ax.set_ylabel("held-out accuracy (hits@1)")
    ax.legend()
    _caption(ax, caption)
    return ax


def plot_gain_vs_tasks(points: Mapping[int, Mapping[str, tuple[float, float | None, int]]],
                       labels: Sequence[str] | None = None, ax: Axes | None = None,
                       caption: str | None = None) -> Axes:
    """LoRA-ML minus SR accuracy (paired over seeds) against the number of retraining tasks T.

    ``points[T][label] = (mean, std, n)`` as returned by
    :func:`metanb.experiments.results.paired_gain` for the run with T tasks; one line per
    fine-tuning label (default: every label present).
    """
    ax = _axes(ax)
    Ts = sorted(points)
    present = sorted({lab for p in points.values() for lab in p}, key=finetune_order)
    cmap = plt.get_cmap("viridis")
    chosen = list(labels) if labels is not None else present
    for i, lab in enumerate(chosen):
        xs = [T for T in Ts if lab in points[T]]
        ax.errorbar(xs, [points[T][lab][0] for T in xs],
                    yerr=[points[T][lab][1] or 0.0 for T in xs], marker="o", capsize=3,
                    color=cmap(i / max(len(chosen) - 1, 1)),
                    label="no fine-tuning" if lab == "0" else (
                        "last layer" if lab == "head" else f"LoRA rank {lab}"))
    ax.axhline(0.0, color="#999999", linestyle=":")
    ax.set_xticks(Ts)
    ax.set_xlabel("retraining personas T")
    ax.set_ylabel("accuracy gain, LoRA-ML − SR")
    ax.legend()
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
                label=METHOD_NAMES.get(method, method))
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


def _caption(ax: Axes, caption: str | None, width: int = 95) -> None:
    """Provenance line(s) above the plot: profile, model, data, device."""
    if caption:
        ax.set_title(textwrap.fill(caption, width), fontsize=7, loc="left")


def _offsets(k: int, width: float = 0.08) -> list[float]:
    """Small horizontal shifts so error bars of different methods do not overlap."""
    return [(i - (k - 1) / 2) * width for i in range(k)]
