"""Figures of the optimisation-landscape chapter, drawn from :mod:`metanb.linear.landscape`.

Each function returns its Figure; single runs (no seeds to average), so there are no bands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from metanb.linear.family import two_task_family
from metanb.linear.ground_truth import GroundTruth
from metanb.linear.landscape import DescentTrace
from metanb.plots.style import method_color, series_style

# the two factors of the T = 2 family keep one colour and marker each in every panel (series
# colours, not methods')
FACTOR_STYLE = {t: tuple(series_style(t)[key] for key in ("color", "marker", "linestyle"))
                for t in (0, 1)}
TINY = 1e-18


def plot_saddle_spectrum(numeric: torch.Tensor, closed_form: torch.Tensor) -> Figure:
    """Hessian eigenvalues at the SR saddle, ascending: autograd (dots) vs closed form (line)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    index = np.arange(len(closed_form))
    ax.plot(index, closed_form.numpy(), color=method_color("theory"), lw=1,
            label=r"closed form: $2$ and $-\frac{4}{T}\lambda_i(M_t - A_{SR})$")
    ax.plot(index, numeric.numpy(), "o", ms=3, color=method_color("sr"), mfc="none",
            label="autograd Hessian of the objective")
    ax.axhline(0, color="#888888", lw=0.8)
    ax.set_xlabel("eigenvalue index (ascending)")
    ax.set_ylabel("Hessian eigenvalue")
    ax.legend(fontsize=8)
    return fig


def plot_escape(traces: Mapping[str, DescentTrace]) -> Figure:
    """Gradient descent from U = 0 and from small starts: loss and ‖U‖_F per step (log scale)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.4, 3.8), layout="constrained")
    styles = ["-", "--", ":", "-."]
    for i, (label, trace) in enumerate(traces.items()):
        stuck = max(trace.u_norm) == 0.0
        color = method_color("sr") if stuck else method_color("lora_ml")
        ls = styles[i % len(styles)]
        ax.semilogy(np.maximum(trace.loss, TINY), color=color, ls=ls, label=label)
        bx.semilogy(np.maximum(trace.u_norm, TINY), color=color, ls=ls, label=label)
    ax.set_xlabel("gradient step")
    ax.set_ylabel(r"LoRA-ML loss $L(A, U)$")
    bx.set_xlabel("gradient step")
    bx.set_ylabel(r"$\|U\|_F$ (plotted at $10^{-18}$ when exactly 0)")
    ax.legend(fontsize=8)
    return fig


def _hyperbola(ax: Axes, truth: GroundTruth, theta: float, span: float) -> None:
    grid = np.linspace(-span, span, 301)
    points = np.array([two_task_family(truth.A_star, truth.U_star, float(t))[1][:, :, 0].numpy()
                       for t in grid])  # (θ, task, d)
    _, U = two_task_family(truth.A_star, truth.U_star, theta)
    for t, (color, marker, ls) in FACTOR_STYLE.items():
        for sign in (1, -1):
            ax.plot(sign * points[:, t, 0], sign * points[:, t, 1], color=color, ls=ls, lw=1.2,
                    label=f"minimisers $u_{t + 1}(\\theta)$" if sign == 1 else None)
        star = truth.U_star[t, :, 0].numpy()
        ax.plot(*star, marker="*", ms=12, color=color, mec="black", ls="none",
                label=f"$u^\\star_{t + 1}$ ($\\theta = 0$)")
        ax.plot(*U[t, :, 0].numpy(), marker=marker, ms=8, color=color, mec="black", ls="none")
    ax.set_aspect("equal")
    ax.set_xlabel("coordinate 1")
    ax.set_ylabel("coordinate 2")
    ax.legend(fontsize=7, loc="upper left")


def plot_hyperbola(truth: GroundTruth, theta: float, span: float = 2.0) -> Figure:
    """d = 2, k = 1, T = 2: (a) the hyperbolas of exact minimisers ``±u_1(θ)``, ``±u_2(θ)`` in
    the plane with the point at ``theta`` marked; (b) how far the base ``A(θ)`` is from A*."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.4, 4.4), layout="constrained")
    _hyperbola(ax, truth, theta, span)
    ax.set_title(f"θ = {theta:+.2f}", fontsize=10)
    grid = np.linspace(-span, span, 201)
    norm = float(truth.A_star.norm())
    rel = [float((two_task_family(truth.A_star, truth.U_star, float(t))[0] - truth.A_star).norm())
           / norm for t in grid]
    bx.plot(grid, rel, color=method_color("lora_ml"))
    A, _ = two_task_family(truth.A_star, truth.U_star, theta)
    bx.plot([theta], [float((A - truth.A_star).norm()) / norm], "o", color="black")
    bx.set_xlabel(r"boost angle $\theta$")
    bx.set_ylabel(r"$\|A(\theta) - A^\star\|_F / \|A^\star\|_F$ (loss is 0 for all θ)")
    return fig


def plot_hyperbola_panels(truth: GroundTruth, thetas: tuple[float, ...],
                          span: float = 2.0) -> Figure:
    """The static version of the slider: one hyperbola panel per θ in ``thetas``."""
    fig, axes = plt.subplots(1, len(thetas), figsize=(3.6 * len(thetas), 3.8),
                             layout="constrained", squeeze=False)
    for ax, theta in zip(axes[0], thetas, strict=True):
        _hyperbola(ax, truth, theta, span)
        A, _ = two_task_family(truth.A_star, truth.U_star, theta)
        rel = float((A - truth.A_star).norm() / truth.A_star.norm())
        ax.set_title(f"θ = {theta:+.1f}: ‖A(θ) − A*‖/‖A*‖ = {rel:.2f}", fontsize=9)
        if ax is not axes[0][0]:
            ax.get_legend().remove()
    return fig


def plot_landings(landings: Mapping[str, np.ndarray], bins: int = 30) -> Figure:
    """Histograms of the boost angle θ reached by LoRA-ML from random initialisations."""
    fig, axes = plt.subplots(1, len(landings), figsize=(5.2 * len(landings), 3.6),
                             layout="constrained", squeeze=False)
    for ax, (label, theta) in zip(axes[0], landings.items(), strict=True):
        ax.hist(theta, bins=bins, color=method_color("lora_ml"), alpha=0.8)
        ax.axvline(0, color=method_color("theory"), ls="--", lw=1, label=r"$\theta = 0$: $A^\star$")
        ax.set_title(f"{label} ({len(theta)} random initialisations)", fontsize=10)
        ax.set_xlabel(r"boost angle $\theta$ of the minimiser reached")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
    return fig


def plot_valley(section: Mapping[str, np.ndarray], profile_thetas: np.ndarray,
                profile: np.ndarray) -> Figure:
    """(a) T = 2 loss on a slice (θ along the valley, s across it); (b) the T = 3 loss along the
    same family: a third task lifts the valley everywhere but at θ = 0."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.4, 3.9), layout="constrained")
    th, s, loss = section["thetas"], section["offsets"], section["loss"]
    top = math.ceil(math.log10(max(float(loss.max()), 1e-2)))
    levels = 10.0 ** np.arange(-3.0, top + 0.25, 0.5)
    cs = ax.contourf(th, s, np.clip(loss, 1e-3, None), levels=levels, cmap="Greys",
                     norm=LogNorm())
    fig.colorbar(cs, ax=ax, label="T = 2 loss (log scale)", ticks=10.0 ** np.arange(-3, top + 1))
    ax.axhline(0, color=method_color("lora_ml"), lw=2, label="family of minimisers (loss 0)")
    ax.set_xlabel(r"$\theta$ (along the valley)")
    ax.set_ylabel(r"$s$ (across, top Hessian eigenvector)")
    ax.legend(fontsize=8, loc="lower left")
    bx.plot(profile_thetas, np.zeros_like(profile_thetas), color=method_color("lora_ml"),
            label="T = 2 loss on the family")
    bx.plot(profile_thetas, profile, color=method_color("theory"), ls="--",
            label=r"T = 3 loss, best $U_3$: $\frac{1}{3}\,$floor$_3(A(\theta))$")
    bx.set_xlabel(r"boost angle $\theta$")
    bx.set_ylabel("loss")
    bx.legend(fontsize=8)
    return fig
