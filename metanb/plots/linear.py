"""Figures of the linear-theory chapters (3 and 4), drawn from the plain data returned by
:mod:`metanb.linear.experiments`. Each function takes that dict (and optional axes) and returns
the Figure. Lines are the mean over seeds and bands mean ± one standard error of that mean
(sample std / √n, :func:`metanb.stats.column_mean_se`); each legend's title says so and over
how many seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from metanb.plots.style import method_color, series_hatch, series_style
from metanb.stats import column_mean_se, count, se_label

TINY = 1e-18  # floor for log axes (exact zeros are printed, not plotted)


def _axes(axes: Axes | Sequence[Axes] | None, count: int, width: float = 6.4) -> list[Axes]:
    if axes is None:
        _, made = plt.subplots(1, count, figsize=(width * count if count > 1 else width, 4.0),
                               layout="constrained", squeeze=False)
        return list(made[0])
    return [axes] if isinstance(axes, Axes) else list(axes)


def mean_band(ax: Axes, x, values: np.ndarray, color: str, label: str, log: bool = False,
              marker: str = "o", linestyle: str = "-") -> int:
    """Mean over seeds (rows) with a ± one-standard-error band (clipped at TINY on log axes;
    no band for a single seed); returns the number of seeds."""
    mean, se = column_mean_se(values)
    ax.plot(x, np.maximum(mean, TINY) if log else mean, marker=marker, ms=4, color=color,
            label=label, linestyle=linestyle)
    if se is not None:
        low = np.maximum(mean - se, TINY if log else -np.inf)
        ax.fill_between(x, low, mean + se, color=color, alpha=0.2, linewidth=0)
    return len(values)


def _legend(ax: Axes, title: str) -> None:
    """The legend, titled with what its lines and bands are (see :func:`se_label`)."""
    ax.legend(title=title)


def plot_sr_limit(data: dict[str, Any], axes=None) -> Figure:
    """(a) SR's distance to its predicted limit (→ 0) and to A_star (→ the predicted gap) vs n;
    (b) singular values of the shift ``sr_limit − A_star`` for each T: T k nonzero."""
    ax, bx = _axes(axes, 2, width=5.2)
    n = data["samples"]
    seeds = [mean_band(ax, n, data["dist_to_star"], method_color("sr"),
                       r"$\|\hat A_{SR} - A^\star\|_F$", log=True),
             mean_band(ax, n, data["dist_to_limit"], series_style(0)["color"],
                       r"$\|\hat A_{SR} - (A^\star + \frac{1}{T}\sum_t U_tU_t^\top)\|_F$",
                       log=True, marker="s", linestyle="-.")]
    gap = data["predicted_gap"]
    ax.axhline(gap.mean(), color=method_color("theory"), ls="--",
               label=r"predicted $\|\frac{1}{T}\sum_t U_tU_t^\top\|_F$")
    ax.set(xscale="log", yscale="log", xlabel="retraining samples per task $n$",
           ylabel="Frobenius distance", title=f"SR converges to its limit (T = {data['tasks']})")
    _legend(ax, se_label(seeds))
    Ts = data["spectrum_tasks"]
    runs = {len(data["spectrum"][int(T)]) for T in Ts}
    for i, T in enumerate(Ts):
        s = data["spectrum"][int(T)].mean(0)
        idx = np.arange(1, len(s) + 1)
        bx.semilogy(idx, np.maximum(s, 1e-17), ms=4, **series_style(i),
                    label=f"T = {T} (Tk = {T * data['k']})")
    bx.xaxis.get_major_locator().set_params(integer=True)
    bx.set(xlabel="index $i$", ylabel=r"$\sigma_i(A_{SR} - A^\star)$",
           title="rank of SR's shift = T k", ylim=(1e-17, None))
    _legend(bx, "mean over " + " or ".join(count(r) for r in sorted(runs)))
    return ax.figure


def plot_floor_vs_samples(data: dict[str, Any], ax: Axes | None = None) -> Figure:
    """Excess error after rank-k fine-tuning vs fine-tuning samples: SR plateaus at its floor,
    LoRA-ML follows σ² p / n."""
    (ax,) = _axes(ax, 1)
    m = data["samples"]
    seeds = [mean_band(ax, m, data["sr"], method_color("sr"), "SR + rank-k fine-tuning",
                       log=True),
             mean_band(ax, m, data["lora_ml"], method_color("lora-ml"),
                       "LoRA-ML + rank-k fine-tuning", log=True)]
    ax.axhline(data["sr_floor"].mean(), color=method_color("sr"), ls="--",
               label="SR floor (Eckart-Young, closed form)")
    ax.plot(m, data["rate"], color=method_color("theory"), ls="--",
            label=r"$\sigma^2 (dk - k(k-1)/2)/n$")
    ax.set(xscale="log", yscale="log", xlabel="fine-tuning samples $n$ of the new task",
           ylabel=r"excess error $\|\hat A + \Delta\hat W - M_{new}\|_F^2$",
           title=f"d = {data['d']}, k = {data['k']}, T = {data['tasks']}")
    _legend(ax, se_label(seeds))
    return ax.figure


def plot_recovery_vs_tasks(data: dict[str, Any], ax: Axes | None = None) -> Figure:
    """‖Â − A_star‖/‖A_star‖ against the number of retraining tasks T."""
    (ax,) = _axes(ax, 1)
    T = data["tasks"]
    seeds = [mean_band(ax, T, data["sr"], method_color("sr"), "SR (population)", log=True),
             mean_band(ax, T, data["lora_ml_finite"], method_color("lora-ml"),
                       f"LoRA-ML, n = {data['samples']} per task", log=True, linestyle=":"),
             mean_band(ax, T, data["lora_ml"], method_color("lora-ml"), "LoRA-ML (population)",
                       log=True)]
    ax.set(yscale="log", xticks=T, xlabel="retraining tasks $T$",
           ylabel=r"$\|\hat A - A^\star\|_F / \|A^\star\|_F$", title=r"recovery of $A^\star$")
    _legend(ax, se_label(seeds))
    return ax.figure


def plot_two_task_family(data: dict[str, Any], axes=None) -> Figure:
    """(a) the explicit curve of zero-loss minimisers A(θ) and where LoRA-ML's runs landed on it;
    (b) their training curves (best loss so far per function evaluation)."""
    ax, bx = _axes(axes, 2, width=5.2)
    ax.plot(data["thetas"], data["family_rel_error"], color=method_color("theory"),
            label=r"family $A(\theta)$ (loss $= 0$)")
    ax.plot(0.0, 0.0, "*", ms=12, color=method_color("lora-ml"), label=r"$A^\star = A(0)$")
    for i, (theta, err) in enumerate(zip(data["found_theta"], data["found_rel_error"],
                                         strict=True)):
        style = series_style(i)
        ax.plot(theta, err, style["marker"], ms=8, color=style["color"],
                label=f"LoRA-ML, init {data['inits'][i]}")
    ax.set(xlabel=r"boost angle $\theta$", ylabel=r"$\|A - A^\star\|_F / \|A^\star\|_F$",
           title="T = 2: a curve of global minima")
    ax.legend()
    for i, hist in enumerate(data["histories"]):
        style = series_style(i)
        bx.semilogy(np.maximum(np.minimum.accumulate(hist), TINY), color=style["color"],
                    linestyle=style["linestyle"], label=f"init {data['inits'][i]}")
    bx.set(xlabel="function evaluation (L-BFGS)", ylabel="LoRA-ML loss (best so far)",
           title="both runs reach zero loss")
    bx.legend()
    return ax.figure


def plot_rate(data: dict[str, Any], ax: Axes | None = None) -> Figure:
    """Log-log excess error vs n for several k, with the σ² p / n lines and fitted slopes."""
    (ax,) = _axes(ax, 1)
    ks = data["ks"]
    n = data["samples"]
    seeds = []
    for i, k in enumerate(ks):
        style = series_style(i)
        color = style["color"]
        k = int(k)
        seeds.append(mean_band(ax, n, data["error"][k], color,
                               f"k = {k}: measured (slope {data['slope'][k]:.2f})", log=True,
                               marker=style["marker"]))
        ax.plot(n, data["theory"][k], ls="--", color=color,
                label=f"k = {k}: $\\sigma^2 p/n$, p = {data['params'][k]}")
    ax.set(xscale="log", yscale="log", xlabel="fine-tuning samples $n$",
           ylabel="excess error after LoRA-ML + rank-k fine-tuning",
           title=f"the $kd/n$ rate (d = {data['d']})")
    _legend(ax, se_label(seeds))
    return ax.figure


def plot_rank_misspecification(data: dict[str, Any], axes=None) -> Figure:
    """(a) fine-tuning floor (n = ∞) against the adapter rank r; (b) error with n samples."""
    ax, bx = _axes(axes, 2, width=5.2)
    r = data["ranks"]
    seeds = [mean_band(ax, r, data["sr_floor"], method_color("sr"), "SR base"),
             mean_band(ax, r, data["floor"], method_color("lora-ml"), "LoRA-ML base (rank r)")]
    ax.plot(r, data["star_floor"].mean(0), "k--", label=r"from $A^\star$: $\sum_{i>r}\lambda_i^2$")
    ax.axvline(data["k"], color="grey", lw=0.8)
    ax.set(xticks=r, xlabel="adapter rank $r$ (true $k$ marked)", ylabel="excess error",
           title="n = ∞: the floor")
    _legend(ax, se_label(seeds))
    finite = mean_band(bx, r, data["finite"], method_color("lora-ml"), "LoRA-ML base (rank r)")
    bx.plot(r, data["variance"] + data["star_floor"].mean(0), "k--",
            label=r"$\sigma^2 p(r)/n$ + floor from $A^\star$")
    bx.axvline(data["k"], color="grey", lw=0.8)
    bx.set(xticks=r, xlabel="adapter rank $r$", ylabel="excess error",
           title=f"n = {data['samples']} fine-tuning samples")
    _legend(bx, se_label([finite]))
    return ax.figure


def plot_shift_spectra(data: dict[str, Any], axes=None) -> Figure:
    """Intuition before the algebra (chapter 3), from
    :func:`~metanb.linear.experiments.shift_spectra`:
    (a) the eigenvalues of each task's shift ``U_t U_tᵀ`` (k nonzero each); (b) of their average,
    SR's shift from A_star (T k nonzero: "a rank-Tk blob"); (c) of what a rank-k fine-tune must
    fix on a new task, from A_star and from SR's base, with the part the best PSD rank-k adapter
    absorbs hatched and the floor it leaves (the squares of the rest) in the legend."""
    ax, bx, cx = _axes(axes, 3, width=4.3)
    d, k, T = data["d"], data["k"], data["tasks"]
    idx = np.arange(1, d + 1)
    width = 0.8 / T
    for t, ev in enumerate(data["shifts"]):
        ax.bar(idx - 0.4 + width * (t + 0.5), ev, width, color=series_style(t)["color"],
               hatch=series_hatch(t), edgecolor="white",
               label=f"$U_{{{t + 1}}}U_{{{t + 1}}}^\\top$")
    ax.set(title=f"each task's shift: rank k = {k}", ylabel="eigenvalue")
    ax.legend()
    nonzero = int((np.abs(data["average"]) > 1e-10).sum())
    bx.bar(idx, data["average"], 0.6, color=method_color("sr"),
           label=r"$\frac{1}{T}\sum_t U_tU_t^\top = A_{SR} - A^\star$")
    bx.set(title=f"their average: rank {nonzero} = Tk", ylim=ax.get_ylim())
    bx.legend()
    for j, (key, color, name) in enumerate((("star", method_color("theory"), r"$A^\star$"),
                                            ("sr", method_color("sr"), "SR"))):
        ev, kept = data[f"residual_{key}"], data[f"kept_{key}"]
        x = idx - 0.2 + 0.4 * j
        cx.bar(x[kept], ev[kept], 0.38, color="white", edgecolor=color, hatch="//",
               label=f"{name}: absorbed")
        cx.bar(x[~kept], ev[~kept], 0.38, color=color,
               label=f"{name}: left, floor {data[f'floor_{key}']:.2f}")
    cx.axhline(0, color="black", lw=0.8)
    cx.set(title=f"new task: eigenvalues of $M_{{new}}$ − base\n(rank-{k} adapter on each base)",
           xlabel="index (by size)", ylabel="eigenvalue")
    cx.legend(loc="upper right")
    for a in (ax, bx, cx):
        a.set_xticks(idx)
        a.set_xlabel("index (by size)")
    return ax.figure


def plot_finite_sample_grid(data: dict[str, Any], axes=None) -> Figure:
    """The end-to-end finite-sample picture (chapter 4), from
    :func:`~metanb.linear.experiments.finite_sample_grid`: heatmaps of the new task's excess
    error (mean over seeds, one shared log colour scale, each cell's value printed) against
    retraining samples per task (rows) and fine-tuning samples (columns), SR left, LoRA-ML right."""
    from matplotlib.colors import LogNorm

    ax, bx = _axes(axes, 2, width=4.6)
    means = {name: data[name].mean(0) for name in ("sr", "lora_ml")}
    norm = LogNorm(vmin=min(m.min() for m in means.values()),
                   vmax=max(m.max() for m in means.values()))
    ns, ms = data["retrain_samples"], data["finetune_samples"]
    seeds = count(len(data["sr"]))
    for a, name, title in ((ax, "sr", f"SR (closed-form floor, n = ∞: "
                                      f"{data['sr_floor_population'].mean():.2f})"),
                           (bx, "lora_ml", "LoRA-ML")):
        mesh = a.pcolormesh(means[name], norm=norm, cmap="viridis")
        for (i, j), value in np.ndenumerate(means[name]):
            # dark text on the light end of the map, light text on the dark end
            light = norm(value) > 0.6
            a.text(j + 0.5, i + 0.5, f"{value:.2g}", ha="center", va="center", fontsize=8,
                   color="black" if light else "white")
        a.set_xticks(np.arange(len(ms)) + 0.5, [str(m) for m in ms])
        a.set_yticks(np.arange(len(ns)) + 0.5, [str(n) for n in ns])
        a.grid(False)
        a.set(xlabel="fine-tuning samples $m$ (new task)", ylabel="retraining samples per task $n$",
              title=title)
    cbar = ax.figure.colorbar(mesh, ax=[ax, bx], shrink=0.9)
    cbar.set_label(f"excess error, mean over {seeds}")
    return ax.figure
