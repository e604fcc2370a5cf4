"""``python -m metanb data ...``: inspect a Persona-Chat file, or generate an offline one.

``data inspect PATH [--format parlai|hf-json] [--skip-bad] [--persona-map MAP] [--json]``
counts personas, dialogues, examples and candidates (what the experiment will see) and, with a
persona map, the clusters and the dialogues the map does not know; ``data generate ...
--out FILE`` writes the offline generator's data in the ParlAI text format; ``data
convert-map MAP --out MAP.json`` writes a persona map's JSON form; ``data download --out DIR``
fetches the paper's Persona-Chat folder (pinned sha256s).
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
    inspect.add_argument(
        "--persona-map",
        default=None,
        help="a persona map (PAML pickle or JSON): also count clusters and unmapped dialogues",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=inspect_command)

    convert = sub.add_parser("convert-map", help="write a persona map's JSON form")
    convert.add_argument("map", help="a persona map (PAML's pickle, read with an allow-list)")
    convert.add_argument("--out", required=True, help="the JSON file to write")
    convert.set_defaults(func=convert_map_command)

    download = sub.add_parser(
        "download", help="fetch Persona-Chat + PAML persona maps into a folder (sha256-pinned)"
    )
    download.add_argument("--out", required=True, help="the folder to fill (data.path)")
    download.add_argument(
        "--sha256",
        action="append",
        default=[],
        metavar="NAME=DIGEST",
        help="pin a file's digest, e.g. train_persona_map=<64 hex> (repeatable)",
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bars")
    download.set_defaults(func=download_command)

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
    if args.persona_map is not None:
        from metanb.data.clusters import cluster_summary
        from metanb.data.persona_map import read_persona_map

        summary.update(cluster_summary(dialogues, read_persona_map(args.persona_map)))
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            if isinstance(value, dict):  # dialogues per cluster: the largest ten
                shown = list(value.items())[:10]
                more = f" ... ({len(value) - 10} more)" if len(value) > 10 else ""
                value = ", ".join(f"{k}: {v}" for k, v in shown) + more
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


def convert_map_command(args: argparse.Namespace) -> int:
    from metanb.data.persona_map import read_persona_map, write_persona_map_json

    persona_map = read_persona_map(args.map)
    out = write_persona_map_json(persona_map, args.out)
    personas = sum(len(v) for v in persona_map.values())
    print(f"wrote {out}: {len(persona_map)} clusters, {personas} personas")
    return 0


def download_command(args: argparse.Namespace) -> int:
    from metanb.data.persona_chat import SOURCES, download_persona_chat

    digests = {}
    for item in args.sha256:
        name, sep, digest = item.partition("=")
        if not sep or name not in SOURCES:
            raise MetanbError(
                f"--sha256 {item!r}: expected NAME=DIGEST with NAME one of {sorted(SOURCES)}"
            )
        digests[name] = digest
    folder = download_persona_chat(args.out, sha256=digests, progress=not args.no_progress)
    print(f"ready: {folder} (use it as data.path)")
    return 0
