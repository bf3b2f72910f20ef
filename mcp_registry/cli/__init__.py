"""`mcp-registry`: the command line (`audit`, `demo`).

Each subcommand lives in its own module with `add_parser(subparsers)`, which registers the
subcommand and sets `run`, a callable taking the parsed `argparse.Namespace` and returning the
exit status. Usage errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mcp_registry.cli import audit


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line (`mcp-registry audit: error: ...`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mcp-registry",
        description="Inspect the MCP session registry (audit) or watch it work (demo).",
    )
    subparsers: argparse._SubParsersAction[Any] = parser.add_subparsers(title="commands", metavar="COMMAND")
    audit.add_parser(subparsers)
    _add_demo(subparsers)
    return parser


def _add_demo(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register `demo` from its own module; if that cannot be imported, `audit` still works."""
    try:
        demo = importlib.import_module("mcp_registry.cli.demo")
    except ImportError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        parser = subparsers.add_parser("demo", help="run the demo (unavailable here)", add_help=False)
        parser.set_defaults(run=lambda _args: _unavailable("demo", reason), accepts_extra_arguments=True)
        return
    demo.add_parser(subparsers)


def _unavailable(command: str, reason: str) -> int:
    print(f"mcp-registry {command}: unavailable in this installation ({reason})", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mcp-registry` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return int(run(args))
    except KeyboardInterrupt:
        print("mcp-registry: interrupted", file=sys.stderr)
        return 130
