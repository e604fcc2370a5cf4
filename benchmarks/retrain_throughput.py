"""Retraining speed and memory: metanb's mixed batch vs a standard step, PEFT, the official loop.

Measured side by side in one process (interleaved, median of repeats, warm-up steps excluded),
for random models (``retrain_cases``: a tiny RoBERTa multiple-choice model, a tiny causal LM,
and a RoBERTa of roberta-base's widths with 2 layers, where the adapters weigh what they do in
practice):

1. **Training throughput** (examples/s) of a step over T task batches, four ways: ``standard``
   (SR, the pooled batch), ``lora-ml mixed`` (metanb: one forward/backward over the mixed
   batch), ``peft loop`` (PEFT: ``set_adapter`` + forward/backward per task, one optimizer
   step) and ``round-robin`` (the official ``jacob-block/peft-ml`` schedule: one optimizer step
   per task batch). Target on CPU: lora-ml mixed >= 0.95x standard.
2. **Inference** (eval mode, forward only, a mixed batch of T tasks): metanb's ``use_tasks`` vs
   PEFT's own mixed-batch path ``adapter_names=[...]``, the same adapter weights in both
   (outputs asserted allclose). Target on CPU: metanb >= 1.0x PEFT.
3. **Schedules by loss** (``retrain_schedules``): mixed vs round-robin after the same number
   of examples, on a learnable synthetic task family.
4. **Peak memory** (``retrain_memory``) of a few steps for T = 2, 8, 32, 64: RSS in a fresh
   process per measurement on CPU, ``torch.cuda.max_memory_allocated`` on a GPU.

Clocks: on a GPU, wall-clock time. On a shared CPU, wall-clock time mostly measures the
neighbours, so the tables use this process's CPU time (``time.process_time``, all threads
summed; run with ``--threads 1`` for numbers that mean the same as wall time on an idle
machine). Both are stored.

    OMP_NUM_THREADS=1 python benchmarks/retrain_throughput.py --quick --threads 1

Prints each table, then one table of ratios; writes everything with provenance (commit,
device, torch version, date, threads) to benchmarks/results/retrain_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from retrain_cases import CASES, WAYS, Case, Sizes, flop_bound, quiet_transformers, run_way
from retrain_memory import cpu_peaks, cuda_peak_mib, rss_supported
from retrain_peers import peft_inference_twin, randomise_adapters
from retrain_schedules import compare_schedules

from metanb.io import atomic_write_text
from metanb.lora import MultiLoraConfig, add_multi_lora, use_tasks
from metanb.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results"
CLOCKS = ("seconds", "cpu_seconds")  # wall clock, process CPU time (as in retrain's history)
TARGETS = {"mixed / standard": 0.95, "infer metanb / peft": 1.0}  # on CPU
CUDA_TARGET = ("mixed / standard", 0.9, 32)  # on a GPU, at T = 32


def examples_per_second(history: list[dict[str, float]], warmup: int) -> dict[str, float]:
    """Throughput over the entries after ``warmup``, by each clock (cumulative times)."""
    examples = sum(h["examples"] for h in history[warmup:])
    return {clock: examples / (history[-1][clock] - history[warmup - 1][clock])
            for clock in CLOCKS}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def interleaved(runs: dict[str, Callable[[], dict[str, float]]], repeats: int
                ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Median ex/s of each run by clock, and the samples; repeats interleave the runs, so a
    noisy neighbour hits all of them alike."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    speed = {c: {name: statistics.median(x[c] for x in s) for name, s in samples.items()}
             for c in CLOCKS}
    rounded = {name: [{c: round(x[c], 3) for c in CLOCKS} for x in s]
               for name, s in samples.items()}
    return speed, rounded


def training_row(case: Case, T: int, args: argparse.Namespace, device: str) -> dict[str, Any]:
    tasks = case.make_tasks(T)
    steps = min(args.steps, case.max_steps or args.steps)
    warmup = min(args.warmup, steps // 3)
    runs = {way: (lambda way=way: examples_per_second(
        run_way(way, case, tasks, steps, args.rank, device), warmup)) for way in WAYS}
    speed, samples = interleaved(runs, args.repeats)
    row: dict[str, Any] = {"case": case.name, "T": T, "steps": steps, "warmup": warmup,
                           "examples_per_step": sum(len(t[0]["input_ids"]) for t in tasks)}
    for c in CLOCKS:
        s = speed[c]
        row[c] = {
            **{f"{way} ex/s": round(v, 1) for way, v in s.items()},
            "mixed / standard": ratio(s["lora-ml mixed"], s["standard"]),
            # the same, repeat by repeat (each pair ran back to back), then the median: less
            # moved by a neighbour that comes and goes between repeats
            "mixed / standard paired": round(statistics.median(
                m[c] / st[c] for m, st in zip(samples["lora-ml mixed"], samples["standard"],
                                              strict=True)), 3),
            "mixed / peft loop": ratio(s["lora-ml mixed"], s["peft loop"]),
            "mixed / round-robin": ratio(s["lora-ml mixed"], s["round-robin"]),
        }
    row["samples"] = samples
    return row


def mixed_inputs(case: Case, T: int) -> tuple[dict[str, torch.Tensor], list[int], list[str]]:
    """One batch holding every task's first batch, in task order (as the retraining loop mixes
    them); metanb's ids (one per example) and PEFT's names (one per row of a layer's input:
    a multiple-choice model flattens its choices into rows)."""
    batches = [batches[0] for batches in case.make_tasks(T)]
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0] if k != "labels"}
    ids = [t for t, b in enumerate(batches) for _ in range(len(b["input_ids"]))]
    rows = batch["input_ids"][0].numel() // batch["input_ids"].shape[-1]  # sequences/example
    return batch, ids, [f"task{t}" for t in ids for _ in range(rows)]


def inference_row(case: Case, T: int, args: argparse.Namespace, device: str) -> dict[str, Any]:
    adapted = add_multi_lora(copy.deepcopy(case.model), MultiLoraConfig(
        num_tasks=T, rank=args.rank, alpha=2.0 * args.rank, target_modules=case.target_modules))
    randomise_adapters(adapted, seed=T)
    peft_model = peft_inference_twin(adapted, case.model, args.rank, case.target_modules,
                                     case.fan_in_fan_out).to(device)
    adapted.to(device).eval()
    batch, ids, names = mixed_inputs(case, T)
    batch = {k: v.to(device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def metanb_forward() -> torch.Tensor:
        with use_tasks(adapted, ids):
            return adapted(**batch).logits

    def peft_forward() -> torch.Tensor:
        return peft_model(**batch, adapter_names=names).logits

    with torch.no_grad():
        ours, theirs = metanb_forward(), peft_forward()
        base = case.model.to(device).eval()(**batch).logits
        case.model.to("cpu")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    if torch.allclose(ours, base, atol=1e-4):
        raise RuntimeError("the adapters change nothing: the comparison would test no adapter")

    def timed(forward: Callable[[], torch.Tensor]) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            with torch.no_grad():
                for _ in range(args.warmup):
                    forward()
                sync()
                began, cpu_began = time.perf_counter(), time.process_time()
                for _ in range(args.forwards):
                    forward()
                sync()
            n = args.forwards * len(ids)
            return {"seconds": n / (time.perf_counter() - began),
                    "cpu_seconds": n / (time.process_time() - cpu_began)}
        return run

    speed, samples = interleaved({"metanb use_tasks": timed(metanb_forward),
                                  "peft adapter_names": timed(peft_forward)}, args.repeats)
    row: dict[str, Any] = {"case": case.name, "T": T, "batch": len(ids),
                           "max_abs_diff": float((ours - theirs).abs().max())}
    for c in CLOCKS:
        s = speed[c]
        row[c] = {**{f"{name} ex/s": round(v, 1) for name, v in s.items()},
                  "infer metanb / peft": ratio(s["metanb use_tasks"], s["peft adapter_names"])}
    row["samples"] = samples
    return row


def memory_rows(args: argparse.Namespace, sizes: Sizes, device: str, cases: dict[str, Case]
                ) -> list[dict[str, Any]]:
    """Peak MiB of ``args.memory_steps`` steps of each way, for each case that has memory
    rows and each T."""
    jobs = [{"case": case, "way": way, "T": T} for case in args.cases if cases[case].memory
            for T in args.memory_tasks for way in args.memory_ways]
    if device == "cuda":
        peaks = [cuda_peak_mib(j["case"], sizes, j["way"], j["T"], args.memory_steps)
                 for j in jobs]
    elif rss_supported():
        peaks = cpu_peaks(jobs, sizes, args.memory_steps)
    else:
        print("peak memory: this kernel cannot reset a process's peak RSS; skipped")
        return []
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for job, peak in zip(jobs, peaks, strict=True):
        row = rows.setdefault((job["case"], job["T"]), {"case": job["case"], "T": job["T"]})
        row[f"{job['way']} MiB"] = round(peak, 1)
    for row in rows.values():
        if "standard MiB" in row and "lora-ml mixed MiB" in row:
            row["mem mixed / standard"] = ratio(row["lora-ml mixed MiB"], row["standard MiB"])
    return list(rows.values())


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [columns, *[[row.get(c, "") for c in columns] for row in rows]]
    widths = [max(len(c), 8) for c in columns]
    print(f"\n[{title}]")
    for i, line in enumerate(cells):
        print(" | ".join(f"{x:>{w}}" for x, w in zip(line, widths, strict=True)), flush=True)
        if i == 0:
            print(" | ".join("-" * w for w in widths))


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (case, T): every ratio of the run, side by side."""
    clock = result["table_clock"]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in result["training"]:
        rows[(r["case"], r["T"])] = {"case": r["case"], "T": r["T"], **{
            k: v for k, v in r[clock].items() if "/" in k},
            "FLOP bound": result["cases"][r["case"]]["flop_bound"]}
    for r in result["inference"]:
        rows.setdefault((r["case"], r["T"]), {"case": r["case"], "T": r["T"]})[
            "infer metanb / peft"] = r[clock]["infer metanb / peft"]
    for r in result["memory"]:
        if "mem mixed / standard" in r:
            rows.setdefault((r["case"], r["T"]), {"case": r["case"], "T": r["T"]})[
                "mem mixed / standard"] = r["mem mixed / standard"]
    return sorted(rows.values(), key=lambda r: (r["case"], r["T"]))


def verdicts(result: dict[str, Any]) -> list[str]:
    """Each target and whether this run met it: the smallest ratio over all rows, then over
    the rows of each case (a width-64 model and a roberta-base-wide one can disagree)."""
    rows = result["summary"]
    if result["device"] == "cuda":
        name, target, T = CUDA_TARGET
        checks = [(name, target, [r for r in rows if r["T"] == T and name in r])]
    else:
        checks = [(name, target, [r for r in rows if name in r])
                  for name, target in TARGETS.items()]
    lines = []
    for name, target, hits in checks:
        if not hits:
            continue
        worst = min(r[name] for r in hits)
        by_case = {case: min(r[name] for r in hits if r["case"] == case)
                   for case in dict.fromkeys(r["case"] for r in hits)}
        bound = {case: result["cases"][case]["flop_bound"] for case in by_case
                 } if name == "mixed / standard" else {}
        lines.append(f"{name} >= {target}: worst {worst} -> "
                     f"{'met' if worst >= target else 'NOT met'} (by case: " + ", ".join(
                         f"{case} {v} {'met' if v >= target else 'NOT met'}"
                         + (f" [FLOP bound {bound[case]}]" if case in bound else "")
                         for case, v in by_case.items()) + ")")
    return lines


def measure(device: str, args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    clock = "seconds" if device == "cuda" else "cpu_seconds"
    cases = {name: CASES[name](sizes) for name in args.cases}
    result: dict[str, Any] = {"device": device, "table_clock": clock,
                              "cases": {n: {"target_modules": list(c.target_modules),
                                            "note": c.note,
                                            "flop_bound": flop_bound(c, args.rank)}
                                        for n, c in cases.items()}}
    for case in cases.values():
        if case.note:
            print(f"{case.name}: {case.note}")
    training = [training_row(cases[name], T, args, device)
                for name in args.cases for T in args.tasks[name]]
    print_table(f"training, {device}, examples per second of {clock}, "
                f"{torch.get_num_threads()} threads",
                [{**r, **r[clock]} for r in training],
                ["case", "T", "examples_per_step", *[f"{w} ex/s" for w in WAYS],
                 "mixed / standard", "mixed / peft loop", "mixed / round-robin"])
    inference = [inference_row(cases[name], T, args, device)
                 for name in args.cases for T in args.tasks[name]]
    print_table(f"inference (eval, forward only), {device}, examples per second of {clock}",
                [{**r, **r[clock]} for r in inference],
                ["case", "T", "batch", "metanb use_tasks ex/s", "peft adapter_names ex/s",
                 "infer metanb / peft", "max_abs_diff"])
    schedules = compare_schedules(sizes, args.schedule_tasks, args.schedule_rounds,
                                  args.schedule_lr) if device == "cpu" else []
    if schedules:
        print_table("schedules by loss after equal examples (keyed tasks; training loss by "
                    "quarter of the run, on fresh batches)", schedules, list(schedules[0]))
    memory = memory_rows(args, sizes, device, cases)
    print_table(f"peak memory of {args.memory_steps} steps, {device}, MiB",
                memory, ["case", "T", *[f"{w} MiB" for w in args.memory_ways],
                         "mem mixed / standard"])
    result.update(training=training, inference=inference, schedules=schedules, memory=memory)
    result["summary"] = summary(result)
    result["verdicts"] = verdicts(result)
    print_table(f"ratios, {device}, {clock}, {torch.get_num_threads()} threads",
                result["summary"], ["case", "T", "mixed / standard", "mixed / standard paired",
                                    "FLOP bound",
                                    "mixed / peft loop",
                                    "mixed / round-robin", "infer metanb / peft",
                                    "mem mixed / standard"])
    for line in result["verdicts"]:
        print(f"target {line}")
    result.update(provenance=provenance(device), torch_threads=torch.get_num_threads())
    return result


def parse_args() -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~2 min, 2 cores)")
    parser.add_argument("--tasks", type=int, nargs="+", default=None,
                        help="T values of the training and inference tables")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the CPU, and the GPU too if there is one")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved repeats of each timed run (default 3); more on a "
                        "busy machine, where single runs vary by 20%%")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    q = args.quick
    sizes = Sizes(hidden=64 if q else 256, layers=2 if q else 4, per_task=2 if q else 4,
                  choices=4, length=32 if q else 64, rank=args.rank)
    args.per_task = sizes.per_task
    args.steps, args.warmup = (8, 2) if q else (30, 5)
    if args.repeats is None:
        args.repeats = 3
    elif args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    args.forwards = 5 if q else 20
    roberta_tasks = args.tasks or ([2, 8, 32] if q else [2, 8, 32, 64])
    args.tasks = {"roberta-mc": roberta_tasks,
                  "causal-lm": args.tasks or ([8] if q else [2, 8, 32, 64]),
                  "roberta-base-width": args.tasks or [8]}
    args.memory_tasks = [2, 8, 32, 64]
    args.memory_steps = 2
    args.memory_ways = ["standard", "lora-ml mixed"] + ([] if q else ["round-robin",
                                                                     "peft loop"])
    args.schedule_tasks, args.schedule_rounds, args.schedule_lr = (
        (4, 120, 3e-3) if q else (8, 200, 2e-3))
    return args, sizes


def main() -> None:
    args, sizes = parse_args()
    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    for device in devices:
        began = time.perf_counter()
        result = measure(device, args, sizes)
        result.update(settings={**settings, "sizes": asdict(sizes)},
                      wall_seconds=round(time.perf_counter() - began, 1))
        path = atomic_write_text(args.out / f"retrain_throughput_{device}.json",
                                 json.dumps(result, indent=2) + "\n")
        print(f"wrote {path} ({result['wall_seconds']} s)")


if __name__ == "__main__":
    main()
