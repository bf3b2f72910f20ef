"""`mcp-registry audit`: what the registry recorded over a window, as tables or JSON.

The audit only reads Redis (see `mcp_registry.registry.reader`). Every failure a user can
cause or meet (a bad `--since`, a wrong URL, an unreachable or empty registry) ends with one
line on stderr and a non-zero exit status:

| status | meaning |
|--------|---------|
| 0 | the report was printed |
| 1 | Redis could not be reached or read |
| 2 | bad input (`--since`, `--url`, `--prefix`, an `MCP_SESSION_*` variable) |
| 3 | the registry holds nothing for the window |
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcp_registry.cli.worker_groups import group_by_host
from mcp_registry.config import ENV_PREFIX, ENV_URL, ConfigError, RegistryConfig
from mcp_registry.outcomes import Status
from mcp_registry.registry import redis_url
from mcp_registry.registry.client import REDIS_ERRORS, RedisMisconfigured, connect, first_contact
from mcp_registry.registry.reader import AuditReport, WorkerStats, read_audit
from mcp_registry.registry.redis_url import redact

DEFAULT_URL: Final = "redis://localhost:6379/0"
DEFAULT_PREFIX: Final = "mcpreg"
DEFAULT_SINCE: Final = "1h"
MAX_SINCE_SECONDS: Final = 90 * 86_400
REDIS_TIMEOUT_SECONDS: Final = 3.0
"""Connect and read timeout: an unreachable Redis fails in seconds, not minutes."""
SPARK_WIDTH: Final = 72
"""At most this many characters per sparkline: a 1 h window gets one per minute."""
TOP_CLIENTS: Final = 10

EXIT_OK: Final = 0
EXIT_REDIS: Final = 1
EXIT_USAGE: Final = 2
EXIT_EMPTY: Final = 3

_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_BLOCKS: Final = "▁▂▃▄▅▆▇█"


class AuditInputError(ValueError):
    """Input the audit cannot work with; the message is the one line the user sees."""


# --- the command line -----------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `2h`, `7d` or plain seconds (`3600`); positive, at most 90 days."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise AuditInputError(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d or plain seconds")
    seconds = float(match[1]) * _UNITS[match[2]]
    if not seconds > 0:
        raise AuditInputError(f"invalid duration {text!r}: it must be longer than zero")
    if seconds > MAX_SINCE_SECONDS:
        raise AuditInputError(f"invalid duration {text!r}: at most 90d")
    return seconds


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
    url = args.url if args.url is not None else os.environ.get(ENV_URL, "").strip() or DEFAULT_URL
    prefix = args.prefix if args.prefix is not None else os.environ.get(ENV_PREFIX, "").strip() or DEFAULT_PREFIX
    return run_audit(url, prefix=prefix, since=args.since, as_json=args.json, console=Console())


def run_audit(url: str, *, prefix: str, since: float | None, as_json: bool, console: Console) -> int:
    """Read the registry at `url` and print the audit of the last `since` seconds (default 1 h).

    Returns the exit status; a failure prints one line on stderr (never a traceback). Call it
    from synchronous code (it runs its own event loop).
    """
    window = parse_duration(DEFAULT_SINCE) if since is None else since
    try:
        _check_window(window)
        config = _config(url, prefix)
        report = asyncio.run(_read(config, window))
    except (AuditInputError, ConfigError, RedisMisconfigured) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except REDIS_ERRORS as exc:
        return _fail(f"cannot read the registry at {redact(url)}: {_reason(exc)}", EXIT_REDIS)
    if not report.has_data:
        return _fail(
            f"no registry data in the last {format_duration(window)} at {redact(url)} under prefix {prefix!r} "
            "(are the workers running with MCP_SESSION_REGISTRY=1 and the same prefix?)",
            EXIT_EMPTY,
        )
    if as_json:
        console.file.write(json.dumps(report.to_json(), indent=2) + "\n")
        console.file.flush()
    else:
        render(report, console, url=url, prefix=prefix)
    return EXIT_OK


def read_report(url: str, *, prefix: str, since: float) -> AuditReport:
    """The audit report itself, for code that wants the numbers (runs its own event loop)."""
    return asyncio.run(_read(_config(url, prefix), since))


def _check_window(seconds: float) -> None:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SINCE_SECONDS):
        raise AuditInputError(f"invalid window of {seconds!r} seconds: it must be > 0 and at most 90d")


def _config(url: str, prefix: str) -> RegistryConfig:
    """The registry settings the audit uses: the environment's, with its own URL and prefix checked first."""
    try:
        redis_url.parse(url.strip())
    except ValueError as exc:
        raise AuditInputError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
    if not prefix or any(c in prefix for c in "{}| ") or not prefix.isprintable():
        raise AuditInputError(f"invalid prefix {prefix!r}: a non-empty key namespace without braces, '|' or spaces")
    return RegistryConfig.from_env(url=url.strip(), prefix=prefix, redis_timeout=REDIS_TIMEOUT_SECONDS)


async def _read(config: RegistryConfig, window: float) -> AuditReport:
    try:
        client = connect(config, max_connections=1)
    except ValueError as exc:  # redis-py's own URL parsing
        raise AuditInputError(f"invalid Redis URL {redact(config.url)!r}: {exc}") from None
    try:
        await first_contact(client, config)
        return await read_audit(
            client,
            prefix=config.prefix,
            since_seconds=window,
            now=time.time(),
            session_ttl=config.session_ttl_seconds,
        )
    finally:
        await client.aclose()


def _fail(message: str, status: int) -> int:
    print(f"mcp-registry audit: {' '.join(message.split())}", file=sys.stderr)
    return status


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- human output ---------------------------------------------------------------------------
def render(report: AuditReport, console: Console, *, url: str, prefix: str) -> None:
    """Print the report as terminal tables (rich) and per-minute sparklines."""
    start, end = _clock(report.window_start), _clock(report.now)
    console.print(
        Text.assemble(
            ("Registry audit", "bold"),
            f" · last {format_duration(report.window_seconds)} ({start} → {end} UTC)",
            f" · {redact(url)} · prefix {prefix}",
        )
    )
    for table in (
        _totals(report),
        _workers(report),
        _lookups(report),
        _reuse_matrix(report),
        _forwarding(report),
        _clients(report),
        _timeline(report, width=console.width),
        _dropped(report),
    ):
        if table is not None:
            console.print(table)


def _totals(report: AuditReport) -> Table:
    table = _titled("Sessions", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    reasons = " · ".join(f"{reason} {n}" for reason, n in report.ended_by_reason)
    life = report.lifetime
    table.add_row("created", str(report.created), "")
    table.add_row("ended", str(report.ended), reasons)
    table.add_row("live now", str(report.live), f"on {sum(w.alive for w in report.workers)} live worker(s)")
    table.add_row("lifetime median", _seconds(life.median), f"of {life.count} ended session(s)")
    table.add_row("lifetime p95", _seconds(life.p95), "")
    share = report.legacy_share
    table.add_row(
        "legacy share",
        "—" if share is None else f"{share:.1%}",
        f"legacy (session) requests {report.legacy_requests} · modern (2026-07-28) {report.modern_requests}",
    )
    return table


def _workers(report: AuditReport) -> Table:
    """A row per worker, grouped under its host when a host had several (`host:pid` ids across
    restarts); workers gone with no activity in the window are folded into one row per host."""
    table = _titled("Workers")
    for name in ("worker", "state", "live", "created", "ended", "reused elsewhere", "served for others"):
        table.add_column(name, justify="left" if name in ("worker", "state") else "right")
    table.add_column("last heartbeat")
    for group in group_by_host(list(report.workers)):
        grouped = group.workers > 1
        if grouped:
            alive = sum(1 for w in group.shown if w.alive)
            table.add_row(
                Text(group.host, "bold"), Text(f"{alive} of {group.workers} alive", "dim"), str(group.live),
                str(group.created), str(group.ended), str(group.reuse_issued), str(group.reuse_served), "",
            )  # fmt: skip
        for w in group.shown:
            name = f"  {w.worker[len(group.host):] or w.worker}" if grouped else w.worker
            table.add_row(
                name, _state(w), str(w.live), str(w.created), str(w.ended), str(w.reuse_issued),
                str(w.reuse_served), _heartbeat(report, w),
            )  # fmt: skip
        if group.folded:
            table.add_row(Text(f"  + {group.folded} gone, no activity in the window", "dim"), *[""] * 7)
    return table


def _state(w: WorkerStats) -> Text:
    if w.alive:
        return Text("alive", "green")
    if w.last_heartbeat is not None:
        return Text("lost", "red")
    return Text("gone", "dim")


def _heartbeat(report: AuditReport, w: WorkerStats) -> str:
    return "—" if w.last_heartbeat is None else f"{format_duration(report.now - w.last_heartbeat)} ago"


def _lookups(report: AuditReport) -> Table:
    """Requests carrying an id, by what the id was (left) and what was done (right)."""
    by_status = report.lookups_by_status
    total = sum(by_status.values())
    kinds = _titled("Lookups by classification")
    kinds.add_column("classification")
    kinds.add_column("legitimate")
    kinds.add_column("requests", justify="right")
    kinds.add_column("share", justify="right")
    for status, count in by_status.items():
        legit = _legitimate(status)
        verdict = Text("—", "dim") if legit is None else Text("yes", "green") if legit else Text("no", "red")
        kinds.add_row(status, verdict, str(count), _share(count, total))
    actions = _titled("Actions taken")
    actions.add_column("action")
    actions.add_column("requests", justify="right")
    for action, count in report.lookups_by_action.items():
        actions.add_row(action, str(count))
    side_by_side = Table.grid(padding=(0, 2))
    side_by_side.add_row(kinds, actions)
    return side_by_side


def _reuse_matrix(report: AuditReport) -> Table:
    """Origin workers as rows, serving workers as columns: who issued the sessions others served."""
    origins = sorted({r.origin for r in report.reuse})
    serving = sorted({r.serving for r in report.reuse})
    counts = {(r.origin, r.serving): r.count for r in report.reuse}
    table = _titled("Cross-worker reuse (origin → serving)")
    table.add_column("origin ╲ serving")
    for worker in serving:
        table.add_column(worker, justify="right")
    table.add_column("total", justify="right", style="bold")
    for origin in origins:
        row = [str(counts[(origin, s)]) if (origin, s) in counts else "·" for s in serving]
        table.add_row(origin, *row, str(sum(counts.get((origin, s), 0) for s in serving)))
    if not origins:
        table.add_row("no cross-worker reuse in this window", "")
    return table


def _clients(report: AuditReport) -> Table:
    table = _titled("Clients by sessions opened (churn)")
    table.add_column("client")
    table.add_column("version")
    table.add_column("sessions", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    for c in report.clients[:TOP_CLIENTS]:
        flag = Text("re-initializes a lot", "bold red") if c.churning else Text("")
        table.add_row(c.name, c.version, str(c.created), f"{c.share:.1%}", flag)
    if (more := len(report.clients) - TOP_CLIENTS) > 0:
        table.add_row(f"… {more} more", "", str(sum(c.created for c in report.clients[TOP_CLIENTS:])), "", "")
    if not report.clients:
        table.add_row("no client opened a session in this window", "", "", "", "")
    return table


def _timeline(report: AuditReport, *, width: int) -> Table:
    minutes = len(report.timeline)
    room = max(12, min(SPARK_WIDTH, width - 40))  # what the other columns and borders leave
    step = max(1, math.ceil(minutes / room))
    caption = "oldest → newest, one character per " + ("minute" if step == 1 else f"{step} minutes")
    table = _titled("Per minute", caption=caption)
    table.add_column("series", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("peak/min", justify="right", no_wrap=True)
    series = {
        "created": [m.created for m in report.timeline],
        "reuse": [m.reuse for m in report.timeline],
        "fabricated": [m.fabricated for m in report.timeline],
        "malformed": [m.malformed for m in report.timeline],
    }
    for name, values in series.items():
        grouped = [sum(values[i : i + step]) for i in range(0, len(values), step)]
        table.add_row(name, sparkline(grouped), str(sum(values)), str(max(values, default=0)))
    return table


def _forwarding(report: AuditReport) -> Table | None:
    """Continuity's hops: how many reached the session's owner, and why the others did not."""
    forwarded = report.lookups_by_action.get("forward", 0)
    if not forwarded and not report.forward_failures:
        return None
    served = sum(e.count for e in report.lookups if e.action == "forward" and e.status == "cross_worker")
    table = _titled("Forwarded to the session's owner (continuity)", show_header=False)
    table.add_column("what")
    table.add_column("requests", justify="right")
    table.add_row("forwarded", str(forwarded))
    table.add_row("served by the owner", f"{served} ({_share(served, forwarded)})")
    for reason, count in report.forward_failures_by_reason.items():
        if count:
            table.add_row(f"failed: {reason}", str(count))
    return table


def _dropped(report: AuditReport) -> Table | None:
    if not report.dropped:
        return None
    table = _titled("Dropped events (uncounted)", title_style="bold red")
    table.add_column("worker")
    table.add_column("reason")
    table.add_column("events", justify="right")
    for d in report.dropped:
        table.add_row(d.worker, d.reason, str(d.count))
    return table


def sparkline(values: Sequence[int]) -> str:
    """One block character per value, scaled to the largest; zero is the lowest block."""
    peak = max(values, default=0)
    if peak <= 0:
        return _BLOCKS[0] * len(values)
    top = len(_BLOCKS) - 1
    return "".join(_BLOCKS[0] if v <= 0 else _BLOCKS[max(1, round(v / peak * top))] for v in values)


def format_duration(seconds: float) -> str:
    """`3600` → `1h`, `90` → `1m30s`, `5400` → `1h30m`."""
    total = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            amount, total = divmod(total, size)
            if amount or unit == "s":
                parts.append(f"{amount}{unit}")
    return "".join(parts[:2])


def _titled(title: str, **options: Any) -> Table:
    """A table whose title stays on one line, however narrow its columns."""
    return Table(title=title, title_justify="left", min_width=len(title) + 2, **options)


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "—"


def _legitimate(status: str) -> bool | None:
    try:
        return Status(status).legitimate
    except ValueError:  # a classification this version does not know
        return None


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
