"""``python -m metanb data ...``: inspect a Persona-Chat file, or generate an offline one.

``data inspect PATH [--format parlai|hf-json] [--skip-bad] [--json]`` counts personas,
dialogues, examples and candidates (what the experiment will see); ``data generate ...
--out FILE`` writes the offline generator's data in the ParlAI text format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError

FORMATS = ("parlai", "hf-json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data",
        help="inspect or generate Persona-Chat data",
        description="Inspect a Persona-Chat file, or generate an offline one (ParlAI format).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    inspect = sub.add_parser("inspect", help="count personas, dialogues, examples, candidates")
    inspect.add_argument("path", help="a ParlAI text file or a JSON/JSONL file of HF records")
    inspect.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="file format (default: hf-json for .json/.jsonl files, parlai otherwise)",
    )
    inspect.add_argument(
        "--skip-bad", action="store_true", help="skip malformed lines/records and count them"
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=inspect_command)

    generate = sub.add_parser("generate", help="write offline persona-chat data (ParlAI format)")
    generate.add_argument("--personas", type=int, default=32, help="personas (tasks)")
    generate.add_argument("--dialogues-per-persona", type=int, default=4)
    generate.add_argument("--candidates", type=int, default=20, help="candidates per example")
    generate.add_argument("--turns", type=int, default=4, help="examples per dialogue")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same file")
    generate.add_argument("--out", required=True, help="the ParlAI text file to write")
    generate.set_defaults(func=generate_command)


def load_dialogues(path: str, fmt: str | None, skip_bad: bool) -> Any:
    """Read a ParlAI or HF-records file (format chosen by ``fmt`` or the file's extension)."""
    from metanb.data.hf import read_hf_json
    from metanb.data.parlai import read_parlai

    if fmt is None:
        fmt = "hf-json" if Path(path).suffix.lower() in (".json", ".jsonl") else "parlai"
    reader = read_hf_json if fmt == "hf-json" else read_parlai
    return reader(path, skip_bad=skip_bad)


def summarize(dialogues: Any) -> dict[str, Any]:
    """The counts ``data inspect`` prints (personas counted by normalised persona text)."""
    from metanb.data.tasks import persona_key

    sizes = [len(ex.candidates) for d in dialogues for ex in d.examples]
    per_persona: dict[str, int] = {}
    for dialogue in dialogues:
        if dialogue.persona:
            key = persona_key(dialogue.persona)
            per_persona[key] = per_persona.get(key, 0) + len(dialogue.examples)
    return {
        "personas": len(per_persona),
        "dialogues": len(dialogues),
        "examples": len(sizes),
        "candidates_min": min(sizes, default=None),
        "candidates_max": max(sizes, default=None),
        "examples_per_persona_min": min(per_persona.values(), default=None),
    }


def inspect_command(args: argparse.Namespace) -> int:
    dialogues = load_dialogues(args.path, args.format, args.skip_bad)
    summary = summarize(dialogues)
    if args.skip_bad:
        summary["skipped"] = dialogues.skipped
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
        for problem in getattr(dialogues, "problems", [])[:5]:
            print(f"skipped: {problem}")
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from metanb.data.generator import generate_persona_chat
    from metanb.data.parlai import write_parlai

    out = Path(args.out)
    if out.is_dir():
        raise MetanbError(f"--out {out} is a folder; give a file name")
    dialogues = generate_persona_chat(
        personas=args.personas,
        dialogues_per_persona=args.dialogues_per_persona,
        candidates=args.candidates,
        seed=args.seed,
        turns=args.turns,
    )
    write_parlai(dialogues, out)
    examples = sum(len(d.examples) for d in dialogues)
    print(f"wrote {out}: {args.personas} personas, {len(dialogues)} dialogues, {examples} examples")
    return 0
