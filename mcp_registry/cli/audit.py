"""`mcp-registry audit [--since DURATION] [--json] [--url REDIS_URL] [--prefix PREFIX]` (see `mcp_registry.audit`)."""

from __future__ import annotations

import argparse

from rich.console import Console

from mcp_registry.audit.run import DEFAULT_SINCE, AuditInputError, parse_duration, run_audit
from mcp_registry.config import DEFAULT_PREFIX, DEFAULT_URL
from mcp_registry.env import ENV_PREFIX, ENV_URL


def _since_argument(text: str) -> float:
    try:
        return parse_duration(text)
    except AuditInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `mcp-registry audit`."""
    parser = subparsers.add_parser(
        "audit",
        help="report session churn, cross-worker reuse and made-up ids from the registry",
        description="Read the session registry in Redis (read-only) and report what it recorded.",
    )
    parser.add_argument(
        "--since",
        type=_since_argument,
        default=None,
        metavar="DURATION",
        help=f"window to report, e.g. 90s, 15m, 2h, 7d or seconds (default {DEFAULT_SINCE})",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document (docs/audit.md)")
    parser.add_argument("--url", default=None, help=f"Redis URL (default ${ENV_URL}, else {DEFAULT_URL})")
    parser.add_argument(
        "--prefix", default=None, help=f"registry key prefix (default ${ENV_PREFIX}, else {DEFAULT_PREFIX})"
    )
    parser.set_defaults(run=_run_from_args)
    return parser


def _run_from_args(args: argparse.Namespace) -> int:
    return run_audit(args.url, prefix=args.prefix, since=args.since, as_json=args.json, console=Console())


