"""The audit as terminal tables (rich) and per-minute sparklines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcp_registry.audit.worker_groups import group_by_host
from mcp_registry.outcomes import Status
from mcp_registry.redis_url import redact
from mcp_registry.registry.report import AuditReport, WorkerStats

SPARK_WIDTH: Final = 72
"""At most this many characters per sparkline: a 1 h window gets one per minute."""
TOP_CLIENTS: Final = 10

_BLOCKS: Final = "▁▂▃▄▅▆▇█"


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
        _migration(report),
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
    takeover = report.takeover
    saved = sum(n for _, n in takeover.adopted)
    if saved or takeover.failed:
        why = " · ".join(f"{reason} {n}" for reason, n in takeover.adopted)
        table.add_row("saved by takeover", str(saved), f"{why} (adopted from a worker that was gone)")
    table.add_row("lost (404 to a known id)", str(takeover.lost), "the client had to start over, if it could")
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


def _migration(report: AuditReport) -> Table:
    """Who still needs sessions: per client and era, with the verdict as the table's caption."""
    migration = report.migration
    table = _titled("Clients by protocol era (who still needs sessions)", caption=migration.verdict(),
                    caption_justify="left")  # fmt: skip
    for column in ("era", "client", "version"):
        table.add_column(column)
    for column in ("sessions", "requests", "hopped", "lost"):
        table.add_column(column, justify="right")
    table.add_column("last seen (UTC)")
    for c in migration.clients:
        era = Text(c.era, "bold yellow" if c.era == "legacy" else "green")
        lost = Text(str(c.lost), "bold red" if c.lost else "")
        last = _clock(c.last_seen) if c.last_seen is not None else "—"
        table.add_row(era, c.name, c.version, str(c.sessions), str(c.requests), str(c.hopped), lost, last)
    if not migration.clients:
        table.add_row("", "no client was counted in this window", "", "", "", "", "", "")
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
