"""``python -m metanb shallow``: one trial of the shallow network (SR or LoRA-ML, then fine-tuning).

Prints the fine-tuned model's test loss (MSE to the clean labels of fresh inputs of the new
task); ``--json`` prints the whole record, curve included. Defaults are the official
experiment's (40,000 retraining and 15,000 fine-tuning steps: minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json

from metanb.shallow import METHODS, ShallowSetup

_DEFAULTS = ShallowSetup()


def _count(text: str) -> int:
    """A positive integer argument (argparse turns the error into one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "shallow", help="retrain the shallow network (SR or LoRA-ML), fine-tune on a fresh task",
        description=__doc__)
    p.add_argument("--method", choices=tuple(METHODS), required=True)
    p.add_argument("--d", type=_count, required=True, help="input dimension d")
    p.add_argument("--tasks", type=_count, required=True, help="number T of retraining tasks")
    p.add_argument("--k", type=_count, default=_DEFAULTS.k, help="rank k of each task's U_t")
    p.add_argument("--samples", type=_count, default=_DEFAULTS.samples,
                   help="retraining samples per task, N")
    p.add_argument("--finetune-samples", type=_count, default=_DEFAULTS.finetune_samples,
                   help="fine-tuning samples of the new task, n")
    p.add_argument("--test-samples", type=_count, default=_DEFAULTS.test_samples,
                   help="fresh inputs that score the fine-tuned model")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--retrain-steps", type=_count, default=_DEFAULTS.retrain_steps)
    p.add_argument("--finetune-steps", type=_count, default=_DEFAULTS.finetune_steps)
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="AdamW learning rate")
    p.add_argument("--noise", type=float, default=_DEFAULTS.noise, help="label noise std")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from metanb.shallow import run_shallow

    setup = ShallowSetup(
        d=args.d, tasks=args.tasks, k=args.k, samples=args.samples,
        finetune_samples=args.finetune_samples, test_samples=args.test_samples,
        retrain_steps=args.retrain_steps, finetune_steps=args.finetune_steps, lr=args.lr,
        noise=args.noise, seed=args.seed)
    result = run_shallow(args.method, setup)
    result["curve_length"] = len(result["curve"])
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['method']}: d={result['d']} T={result['tasks']} k={result['k']} "
          f"(fine-tuning rank {result['finetune_rank']}) N={result['samples']} "
          f"n={result['finetune_samples']} seed={result['seed']}\n"
          f"  retraining loss {result['retrain_loss']:.4g}; new task before fine-tuning "
          f"{result['pretrained_test_loss']:.4g}, after {result['finetune_test_loss']:.4g} "
          f"({result['seconds']:.1f} s)")
    return 0
