"""Peak memory of a retraining run, each measurement in a fresh process (CPU) or by CUDA's counter.

CPU: ``tracemalloc`` sees only Python's allocator, not torch's, so the peak is read from the
kernel: in a fresh child process the case is built, the peak resident set (``VmHWM``) is reset
(``/proc/self/clear_refs`` = 5, Linux >= 4.0), the run goes, and the peak minus the resident
set before the run is its cost (model copy, adapters, optimizer state, activations). Children
are forked from a *forkserver* that imported torch and transformers once and ran nothing, so
no child inherits freed-but-resident memory from a previous measurement (which would hide part
of its peak) and none pays the imports again.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
allocated before, in this process (the caching allocator's counters are exact).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import torch
from retrain_cases import CASES, Sizes, quiet_transformers, run_way

STATUS = Path("/proc/self/status")
PRELOAD = ["torch", "transformers", "peft", "metanb.retrain", "metanb.lora",
           "retrain_cases", "retrain_memory"]


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {STATUS}")


def rss_supported() -> bool:
    """Whether this kernel lets a process read and reset its own peak resident set."""
    try:
        _status_kib("VmHWM")
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, RuntimeError):
        return False
    return True


def _child_peak_mib(case_name: str, sizes: Sizes, way: str, T: int, steps: int,
                    threads: int) -> float:
    """Run in a fresh child: the peak RSS increase (MiB) of ``steps`` steps of ``way``."""
    torch.set_num_threads(threads)
    quiet_transformers()
    case = CASES[case_name](sizes)
    tasks = case.make_tasks(T)
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    before = _status_kib("VmRSS")
    run_way(way, case, tasks, steps, sizes.rank, "cpu")
    return (_status_kib("VmHWM") - before) / 1024


def cpu_peaks(jobs: list[dict[str, Any]], sizes: Sizes, steps: int) -> list[float]:
    """Peak MiB of each job (``case``, ``way``, ``T``), one fresh forkserver child per job."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    threads = torch.get_num_threads()
    pool = ctx.Pool(1, maxtasksperchild=1)
    try:
        return [pool.apply(_child_peak_mib, (job["case"], sizes, job["way"], job["T"], steps,
                                             threads)) for job in jobs]
    finally:
        pool.close()  # close + join, not terminate: nothing left for the resource tracker
        pool.join()


def cuda_peak_mib(case_name: str, sizes: Sizes, way: str, T: int, steps: int) -> float:
    """Peak CUDA memory (MiB) of ``steps`` steps of ``way`` beyond what was allocated before."""
    case = CASES[case_name](sizes)
    tasks = case.make_tasks(T)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run_way(way, case, tasks, steps, sizes.rank, "cuda")
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20
