"""The ``metanb`` command line (``python -m metanb ...``).

Each area of the package registers its own subcommand in ``<area>/cli.py`` with a
``register(subparsers)`` function; handlers return an exit code. Heavy imports
(torch models, transformers) happen inside handlers so ``--help`` stays fast.
User mistakes raise :class:`metanb.errors.MetanbError` and become one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from metanb.errors import MetanbError

# area modules, each exposing register(subparsers)
_AREAS = (
    "metanb.linear.cli",
    "metanb.data.cli",
    "metanb.experiments.cli",
    "metanb.assignments.cli",
    "metanb.shallow_cli",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="metanb", description=__doc__.splitlines()[0])
    from metanb import __version__

    parser.add_argument("--version", action="version", version=f"metanb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not installed in this build
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MetanbError as exc:
        print(f"metanb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metanb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
