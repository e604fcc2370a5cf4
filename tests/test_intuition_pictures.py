"""The intuition pictures of chapters 3 and 4: the spectra behind "the average of T rank-k shifts
is a rank-Tk blob", and the finite-sample grid (retraining samples × fine-tuning samples)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from metanb.linear.experiments import finite_sample_grid, shift_spectra  # noqa: E402
from metanb.plots.linear import plot_finite_sample_grid, plot_shift_spectra  # noqa: E402


def _rank(ev: np.ndarray) -> int:
    return int((np.abs(ev) > 1e-10).sum())


@pytest.mark.parametrize(("d", "k", "tasks"), [(6, 1, 3), (9, 2, 3)])
def test_shift_spectra_ranks_and_floors(d, k, tasks):
    data = shift_spectra(d=d, k=k, tasks=tasks, seed=2)
    assert [_rank(ev) for ev in data["shifts"]] == [k] * tasks
    assert _rank(data["average"]) == tasks * k  # the rank-Tk blob
    assert np.all(data["average"] > -1e-12)  # an average of PSD shifts is PSD
    # from A_star the new task is one rank-k PSD step, absorbed whole: zero floor
    assert _rank(data["residual_star"]) == k and data["kept_star"].sum() == k
    assert data["floor_star"] < 1e-20
    # from SR's base: k positive and T k negative eigenvalues (Sylvester), rank (T + 1) k
    res = data["residual_sr"]
    assert (res > 1e-10).sum() == k and (res < -1e-10).sum() == tasks * k
    # the floor is exactly the squares of what the adapter cannot absorb
    assert data["floor_sr"] == pytest.approx(float((res[~data["kept_sr"]] ** 2).sum()))
    assert data["floor_sr"] > 0.01
    plot_shift_spectra(data)
    plt.close("all")


@pytest.fixture(scope="module")
def grid():
    return finite_sample_grid(d=8, k=1, tasks=3, retrain_samples=(30, 3000),
                              finetune_samples=(50, 500, 5000), seeds=(0, 1))


def test_finite_sample_grid_shapes_and_seeding(grid):
    assert grid["sr"].shape == grid["lora_ml"].shape == (2, 2, 3)
    assert grid["sr_floor"].shape == (2, 2) and grid["sr_floor_population"].shape == (2,)
    again = finite_sample_grid(d=8, k=1, tasks=3, retrain_samples=(30, 3000),
                               finetune_samples=(50, 500, 5000), seeds=(0, 1))
    assert np.array_equal(again["lora_ml"], grid["lora_ml"])


def test_finite_sample_grid_sr_floor_and_lora_ml_improves(grid):
    # no fine-tuning data beats the Eckart-Young floor of SR's own base
    assert np.all(grid["sr"] >= grid["sr_floor"][:, :, None] - 1e-12)
    # with many retraining samples SR's base is near its population limit: the SR error
    # plateaus at the closed-form floor, while LoRA-ML keeps falling with m and goes below it
    sr, ml = grid["sr"][:, -1], grid["lora_ml"][:, -1]
    floor = grid["sr_floor_population"]
    assert np.all(np.abs(sr[:, -1] - floor) < 0.15 * floor + 0.02)
    assert np.all(np.diff(ml, axis=1) < 0)
    assert np.all(ml[:, -1] < 0.5 * floor)
    # more retraining data helps LoRA-ML at the largest m
    assert np.all(grid["lora_ml"][:, -1, -1] < grid["lora_ml"][:, 0, -1])
    plot_finite_sample_grid(grid)
    plt.close("all")
