"""The figure grid on a tiny grid: each experiment returns well-formed data, each plot draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from metanb.linear.experiments import (  # noqa: E402
    FIGURES,
    GRID,
    LinearGrid,
    floor_vs_samples_experiment,
    recovery_vs_tasks_experiment,
    two_task_family_experiment,
)
from metanb.plots import linear as plots  # noqa: E402

TINY = LinearGrid(d=8, k=1, tasks=3, seeds=(0, 1), sr_samples=(50, 500),
                  spectrum_tasks=(1, 3), finetune_samples=(100, 1000), recovery_tasks=(1, 3),
                  recovery_samples=200, family_inits=(0, 9), family_thetas=(-0.3, 0.3, 7),
                  rate_ks=(1,), rate_seeds=(0, 1), rate_samples=(200, 2000), ranks=(1, 2),
                  misspec_samples=300)

PLOTS = {
    "sr_limit": plots.plot_sr_limit,
    "floor_vs_samples": plots.plot_floor_vs_samples,
    "recovery_vs_tasks": plots.plot_recovery_vs_tasks,
    "two_task_family": plots.plot_two_task_family,
    "rate": plots.plot_rate,
    "rank_misspecification": plots.plot_rank_misspecification,
}


@pytest.fixture(scope="module")
def results():
    return {name: run(TINY, progress=False) for name, run in FIGURES.items()}


def test_every_figure_has_a_plot_and_draws(results):
    import matplotlib.pyplot as plt

    assert PLOTS.keys() == FIGURES.keys()
    for name, data in results.items():
        fig = PLOTS[name](data)
        assert isinstance(fig, Figure) and fig.axes
        plt.close(fig)


def test_experiments_are_seeded_and_shaped(results):
    again = floor_vs_samples_experiment(TINY, progress=False)
    assert np.array_equal(again["lora_ml"], results["floor_vs_samples"]["lora_ml"])
    data = results["floor_vs_samples"]
    assert data["sr"].shape == data["lora_ml"].shape == (2, 2)
    # SR sits at or above its floor; LoRA-ML goes below it with enough data
    assert np.all(data["sr"] >= data["sr_floor"][:, None] - 1e-12)
    assert data["lora_ml"][:, -1].mean() < data["sr_floor"].mean()


def test_recovery_and_family_numbers(results):
    rec = recovery_vs_tasks_experiment(TINY, progress=False)
    assert rec["lora_ml"].shape == (2, 2)
    assert np.all(rec["lora_ml"][:, 1] < 1e-4)  # T = 3
    assert np.all(rec["lora_ml"][:, 0] > 1e-2)  # T = 1
    fam = two_task_family_experiment(TINY, progress=False)
    assert fam["family_loss"].max() < 1e-20
    assert np.all(fam["found_loss"] < 1e-10) and np.all(fam["found_residual"] < 1e-6)
    assert fam["found_rel_error"].shape == (2,) and len(fam["histories"]) == 2


def test_rate_slope_and_shared_grid(results):
    assert -1.4 < results["rate"]["slope"][1] < -0.6
    assert GRID.recovery_tasks == (1, 2, 3, 5)
    assert all(r != GRID.k for r in GRID.ranks if r < GRID.k or r > GRID.k)
    assert min(GRID.ranks) < GRID.k < max(GRID.ranks)
