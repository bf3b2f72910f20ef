"""`mcp-registry demo [--duration S] [--workers N] [--clients N] [--url REDIS_URL] [--json]`."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console

MAX_DURATION: Final = 3600.0
WORKERS_RANGE: Final = (2, 16)
CLIENTS_RANGE: Final = (1, 64)


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register `mcp-registry demo`; its `run` takes the parsed arguments and returns the exit status."""
    parser = subparsers.add_parser(
        "demo",
        help="run the demo: Redis, several workers behind a non-sticky balancer, traffic, then the audit",
        description=(
            "Start a Redis, the demo MCP app in several worker processes with the registry on, and a "
            "non-sticky load balancer, all on 127.0.0.1; drive bounded traffic through it (legacy clients "
            "whose requests hop workers, made-up and malformed ids, sessionless 2026-07-28 clients); "
            "stop everything and print the audit of the run."
        ),
    )
    parser.add_argument(
        "--duration", type=_bounded(float, 1.0, MAX_DURATION), default=20.0, metavar="SECONDS",
        help="how long the traffic runs (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_bounded(int, *WORKERS_RANGE), default=2, metavar="N",
        help="worker processes (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--clients", type=_bounded(int, *CLIENTS_RANGE), default=4, metavar="N",
        help="legacy MCP clients (default 4; about one raw-HTTP and one sessionless client per four come with them)",
    )  # fmt: skip
    parser.add_argument(
        "--url", default=None, metavar="REDIS_URL",
        help="use this Redis instead of starting one (the run writes under a prefix of its own)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the audit as JSON on stdout (progress on stderr)")
    parser.set_defaults(run=_run)


DEMO_MODULES: Final = ("httpx", "uvloop", "httptools", "aiohttp")
"""What the demo's processes import beyond the base package (the `cli` extra)."""


def _run(args: argparse.Namespace) -> int:
    missing = [name for name in DEMO_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"mcp-registry demo: needs the demo's extra ({', '.join(missing)} missing): "
            "pip install 'mcp-session-continuity[cli]'",
            file=sys.stderr,
        )
        return 1
    from mcp_registry.demo.runner import run_demo  # the demo's dependencies load only when it runs

    return run_demo(
        duration=args.duration,
        workers=args.workers,
        clients=args.clients,
        redis_url=args.url,
        console=Console(),
        as_json=args.json,
    )


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: use {kind(low)} to {kind(high)}")
        return value

    return parse
