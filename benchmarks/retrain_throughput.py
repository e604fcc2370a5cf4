"""Retraining throughput: one mixed-batch forward for T adapters vs T forwards with PEFT.

For a small RoBERTa (multiple choice) and T tasks, each step trains on one batch per task.
Three ways to take that step, measured side by side in one process (interleaved, median of
repeats, warm-up steps excluded):

- ``standard``: SR through ``metanb.retrain`` (the pooled batch, no adapters);
- ``lora-ml mixed``: LoRA-ML through ``metanb.retrain`` (base + T adapters, one forward and
  one backward over the mixed batch, per-example adapters);
- ``peft loop``: the same model with T PEFT LoRA adapters and a trainable base, looping over
  tasks with ``set_adapter`` (one forward/backward per task), then one AdamW step.

Examples/s count multiple-choice examples (each has ``--choices`` sequences). Targets:
lora-ml mixed >= 0.85x standard, and faster than the PEFT loop at T = 32.

Clocks: on a GPU, wall-clock time. On a shared CPU, wall-clock time mostly measures the
neighbours, so the table uses this process's CPU time (``time.process_time``, all threads
summed; run with ``--threads 1`` for numbers that mean the same as wall time on an idle
machine). Both are stored.

    python benchmarks/retrain_throughput.py --quick          # a short run, CPU (+ GPU if any)

Writes the table and provenance to benchmarks/results/retrain_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.provenance import provenance
from metanb.retrain import linear_warmup_decay, retrain

RESULTS = Path(__file__).resolve().parent / "results"
VOCAB = 1000


def make_tasks(T: int, args: argparse.Namespace) -> list[list[dict[str, torch.Tensor]]]:
    return [random_multiple_choice_batches(VOCAB, 2, args.per_task, args.choices, args.length,
                                           seed=t) for t in range(T)]


CLOCKS = ("seconds", "cpu_seconds")  # wall clock, process CPU time (as in retrain's history)


def examples_per_second(history: list[dict[str, float]], examples: int, warmup: int
                        ) -> dict[str, float]:
    """Throughput over the steps after ``warmup``, by each clock (cumulative times per step)."""
    timed = len(history) - warmup
    return {clock: examples * timed / (history[-1][clock] - history[warmup - 1][clock])
            for clock in CLOCKS}


def run_metanb(method: str, model, tasks, args, device: str) -> dict[str, float]:
    res = retrain(model, tasks, method=method, rank=args.rank, steps=args.steps, lr=1e-4,
                  tasks_per_step=len(tasks), progress=False, device=device, max_grad_norm=1.0)
    return examples_per_second(res.history, res.history[-1]["examples"], args.warmup)


def run_peft_loop(model, tasks, args, device: str) -> dict[str, float]:
    """LoRA-ML the PEFT way: T named adapters, ``set_adapter`` + forward/backward per task."""
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["query", "value"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(copy.deepcopy(model), config, adapter_name="task0")
        for t in range(1, len(tasks)):
            peft_model.add_adapter(f"task{t}", config)
    for p in peft_model.parameters():  # LoRA-ML retrains the base too
        p.requires_grad_(True)
    peft_model.to(device).train()
    params = list(peft_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(args.steps, 0.1))
    history, examples = [], 0
    began, cpu_began = time.perf_counter(), time.process_time()
    for step in range(args.steps):
        examples = 0
        for t, batches in enumerate(tasks):
            batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
            peft_model.set_adapter(f"task{t}")
            loss = peft_model(**batch).loss * (len(batch["labels"]) / (args.per_task * len(tasks)))
            loss.backward()
            examples += len(batch["labels"])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # synchronise, as the metanb loop does when it logs the loss
        history.append({"seconds": time.perf_counter() - began,
                        "cpu_seconds": time.process_time() - cpu_began})
    return examples_per_second(history, examples, args.warmup)


def measure(device: str, args: argparse.Namespace) -> dict[str, Any]:
    model = tiny_roberta(VOCAB, seed=0, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=4, intermediate_size=4 * args.hidden)
    runs = {
        "standard": lambda tasks: run_metanb("standard", model, tasks, args, device),
        "lora-ml mixed": lambda tasks: run_metanb("lora-ml", model, tasks, args, device),
        "peft loop": lambda tasks: run_peft_loop(model, tasks, args, device),
    }
    clock = "seconds" if device == "cuda" else "cpu_seconds"
    rows = []
    for T in args.tasks:
        tasks = make_tasks(T, args)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits all methods
            for name, run in runs.items():
                samples[name].append(run(tasks))
        speed = {c: {name: statistics.median(x[c] for x in s) for name, s in samples.items()}
                 for c in CLOCKS}
        row = {"T": T, "examples_per_step": T * args.per_task}
        for c in CLOCKS:
            row[c] = {
                **{f"{name} ex/s": round(v, 1) for name, v in speed[c].items()},
                "mixed / standard": round(speed[c]["lora-ml mixed"] / speed[c]["standard"], 3),
                "mixed / peft loop": round(speed[c]["lora-ml mixed"] / speed[c]["peft loop"], 3),
            }
        row["samples"] = {name: [{c: round(x[c], 1) for c in CLOCKS} for x in s]
                          for name, s in samples.items()}
        rows.append(row)
        print_row({**row, **row[clock]}, header=len(rows) == 1, device=device, clock=clock)
    return {"device": device, "table_clock": clock, "rows": rows,
            "provenance": provenance(device), "torch_threads": torch.get_num_threads(),
            "settings": vars(args)}


COLUMNS = ("T", "examples_per_step", "standard ex/s", "lora-ml mixed ex/s", "peft loop ex/s",
           "mixed / standard", "mixed / peft loop")


def print_row(row: dict[str, Any], header: bool, device: str, clock: str) -> None:
    if header:
        print(f"\n[{device}, examples per second of {clock}, {torch.get_num_threads()} threads]")
        print(" | ".join(f"{c:>18}" for c in COLUMNS))
        print(" | ".join("-" * 18 for _ in COLUMNS))
    print(" | ".join(f"{row[c]:>18}" for c in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (small model, few steps)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the CPU, and the GPU too if there is one")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # model and step sizes: quick (shared 2-core CPU) or a fuller run
    args.hidden, args.layers = (64, 2) if args.quick else (256, 4)
    args.per_task, args.choices, args.length = (2, 4, 32) if args.quick else (4, 4, 64)
    args.steps, args.warmup, args.repeats = (12, 3, 3) if args.quick else (30, 5, 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    args.out.mkdir(parents=True, exist_ok=True)
    for device in devices:
        result = measure(device, args)
        result["settings"] = {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in result["settings"].items()}
        path = args.out / f"retrain_throughput_{device}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
