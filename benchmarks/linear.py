"""Time the linear-theory figure grid of chapters 3-4 (the same GRID the chapters run).

Usage: python benchmarks/linear.py [--repeat R]

Prints one row per figure (best and mean wall time over R repeats) and the total, plus the cost
of the two building blocks (one LoRA-ML solve, one symmetric fine-tuning) at the grid's size.
Target: the whole grid in well under 60 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from metanb.linear import (
    finetune_adapter,
    lora_ml,
    make_ground_truth,
    sample_new_task,
    sample_task_data,
)
from metanb.linear.experiments import FIGURES, GRID


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    print(f"# linear figure grid: d={GRID.d} k={GRID.k} T={GRID.tasks} seeds={len(GRID.seeds)} "
          f"| torch {torch.__version__} | {platform.processor() or platform.machine()} "
          f"| torch threads {torch.get_num_threads()} (solves run single-threaded)")
    rows = []
    for name, run in FIGURES.items():
        rows.append((name, timed(lambda run=run: run(GRID, progress=False), args.repeat)))
    truth = make_ground_truth(GRID.d, GRID.k, GRID.tasks, seed=0)
    M = truth.task_matrices()
    M_new, _ = sample_new_task(truth, seed=1)
    data = sample_task_data(M_new, 1000, GRID.sigma, generator=2)
    blocks = [
        (f"lora_ml (d={GRID.d}, T={GRID.tasks}, n=inf)",
         timed(lambda: lora_ml(M, GRID.k), 5 * args.repeat)),
        ("finetune_adapter (symmetric, n=1000)",
         timed(lambda: finetune_adapter(truth.A_star, data, GRID.k), 5 * args.repeat)),
        ("finetune_adapter (asymmetric, n=1000)",
         timed(lambda: finetune_adapter(truth.A_star, data, GRID.k, symmetric=False),
               5 * args.repeat)),
    ]
    width = max(len(name) for name, _ in rows + blocks)
    print(f"{'figure':<{width}}  {'best s':>8}  {'mean s':>8}")
    for name, times in rows:
        print(f"{name:<{width}}  {min(times):8.3f}  {statistics.mean(times):8.3f}")
    total_best = sum(min(t) for _, t in rows)
    total_mean = sum(statistics.mean(t) for _, t in rows)
    print(f"{'TOTAL (figure grid)':<{width}}  {total_best:8.3f}  {total_mean:8.3f}")
    print(f"{'building block':<{width}}  {'best s':>8}  {'mean s':>8}")
    for name, times in blocks:
        print(f"{name:<{width}}  {min(times):8.4f}  {statistics.mean(times):8.4f}")


if __name__ == "__main__":
    main()
