"""The shallow network's figure: the new task's test loss along fine-tuning, LoRA-ML vs SR.

As the paper: the median over trials (log scale), one panel per number of retraining tasks
T, one marker per dimension d; the band spans the trials' min to max, and the legend title
says over how many trials. Input: the records of :func:`metanb.shallow.shallow_grid`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from metanb.errors import MetanbError
from metanb.plots.style import method_color

LABELS = {"sr": "SR", "lora-ml": "LoRA-ML"}
MARKERS = ("o", "s", "^", "v", "D", "P")


def curves(records: Sequence[Mapping[str, Any]], method: str, d: int, tasks: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, trials x iterations losses) of one cell; every trial on the same grid."""
    cell = [r for r in records if (r["method"], r["d"], r["tasks"]) == (method, d, tasks)]
    if not cell:
        return np.zeros(0), np.zeros((0, 0))
    grids = {tuple(r["curve_iterations"]) for r in cell}
    if len(grids) > 1:
        raise MetanbError(f"the trials of {method} d={d} T={tasks} were measured at different "
                          "iterations (different fine-tuning steps); plot one setting at a time")
    return np.asarray(cell[0]["curve_iterations"]), np.asarray([r["curve"] for r in cell])


def plot_shallow(records: Sequence[Mapping[str, Any]], axes: Sequence[Axes] | None = None
                 ) -> Figure:
    """Median test loss vs fine-tuning iteration for every (method, d), one panel per T."""
    if not records:
        raise MetanbError("no shallow records to plot")
    task_counts = sorted({r["tasks"] for r in records})
    ds = sorted({r["d"] for r in records})
    methods = [m for m in LABELS if any(r["method"] == m for r in records)]
    if axes is None:
        _, made = plt.subplots(1, len(task_counts), figsize=(5.2 * len(task_counts), 4.0),
                               layout="constrained", squeeze=False, sharey=True)
        axes = list(made[0])
    for ax, tasks in zip(axes, task_counts, strict=True):
        trials = set()
        for method in methods:
            for marker, d in zip(MARKERS, ds, strict=False):
                its, losses = curves(records, method, d, tasks)
                if not len(losses):
                    continue
                trials.add(len(losses))
                color = method_color(method)
                ax.semilogy(its, np.median(losses, axis=0), color=color, marker=marker, ms=4,
                            markevery=max(1, len(its) // 8),
                            linestyle="-" if method == "lora-ml" else "--",
                            label=f"{LABELS[method]}, d = {d}")
                ax.fill_between(its, losses.min(axis=0), losses.max(axis=0), color=color,
                                alpha=0.08, linewidth=0)
        counts = "/".join(str(n) for n in sorted(trials))
        ax.set_title(f"T = {tasks}")
        ax.set_xlabel("fine-tuning iteration")
        ax.legend(fontsize=7, ncols=2, title=f"median of {counts} trials (band: min–max)",
                  title_fontsize=7)
    axes[0].set_ylabel("new-task test loss (MSE to clean labels)")
    return axes[0].figure
