"""`mcp-registry demo`: the whole product on 127.0.0.1, in one command.

A Redis, N demo workers with the registry on, a non-sticky balancer in front, and bounded traffic
through it in three parts: first with continuity off — what legacy clients live through today —
then, workers restarted, with `MCP_SESSION_CONTINUITY=forward`, then with `adopt`, during which
worker-0 is deployed (SIGTERM, then the new process on its port) mid-run: its sessions are taken
over. A table shows the three side by side (sessions broken, calls served, hops forwarded,
sessions adopted), then the audit of the run. Everything runs in
child processes that are stopped in order (the workers gracefully, so the registry drains before
the audit reads it); Ctrl-C or SIGTERM stops them all and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from types import FrameType
from typing import Final

import anyio
import anyio.to_thread
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from mcp_registry.audit.run import read_report, run_audit
from mcp_registry.demo._process import ChildFailedError, log_tail
from mcp_registry.demo.balancer import Balancer
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.demo.traffic import TrafficPlan, TrafficSummary, drive_traffic
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_HASH_KEY,
    ENV_PREFIX,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_RETENTION_SECONDS,
    ENV_URL,
)
from mcp_registry.redis_url import redact

DEFAULT_PREFIX: Final = "mcpreg"
PHASES: Final = ("off", "forward", "adopt")
"""The demo's three parts: `MCP_SESSION_CONTINUITY` of the workers."""
RESTARTED: Final = 0
"""The worker deployed halfway through the `adopt` part."""
LONG_SESSION_CALLS: Final = 200
"""Calls per legacy session in the `adopt` part (the others open a session every 8 calls)."""
REFRESH_SECONDS: Final = "1"
EXIT_FAILED: Final = 1
GRAFANA_HINT: Final = (
    "To watch the same numbers live in Grafana: [bold]docker compose up[/] in the repository, then open "
    "http://127.0.0.1:3000 (see the README and docs/dashboards.md)."
)


def run_demo(
    *,
    duration: float,
    workers: int,
    clients: int,
    redis_url: str | None,
    console: Console,
    as_json: bool = False,
) -> int:
    """Run the demo and print the audit of the run; return the exit status.

    `redis_url=None` starts a Redis (a `redis-server` on PATH, else an embedded one). With a
    URL, the run writes under a prefix of its own so that it never mixes with real data.
    With `as_json`, `console` receives only the audit's JSON document; the rest goes to stderr.
    """
    status = console if not as_json else Console(stderr=True)
    try:
        return _run(duration, workers, clients, redis_url, console, status, as_json=as_json)
    except ChildFailedError as exc:  # its message carries the tail of the child's log
        status.print(f"mcp-registry demo: {exc}", style="red", markup=False, highlight=False)
        return EXIT_FAILED


def _run(
    duration: float, workers: int, clients: int, redis_url: str | None, console: Console, status: Console,
    *, as_json: bool,
) -> int:  # fmt: skip
    with _sigterm_as_ctrl_c(), _quiet_client_logs(), ExitStack() as stack:
        if redis_url is None:
            server = stack.enter_context(RedisServer())
            url, prefix = server.url, DEFAULT_PREFIX
            kind = "embedded fakeredis (no redis-server on PATH)" if server.embedded else "redis-server"
            status.print(f"Redis: {kind} at {url}")
        else:
            url, prefix = redis_url, f"{DEFAULT_PREFIX}-demo-{int(time.time())}"
            if (problem := _unreachable(url)) is not None:
                status.print(f"mcp-registry demo: cannot reach Redis at {redact(url)}: {problem}", style="red")
                return EXIT_FAILED
            status.print(f"Redis: {redact(url)}, keys under prefix {prefix!r}")

        key = secrets.token_urlsafe(32)  # the deployment's shared key, for this run only
        phases: list[Phase] = []
        counted = Moved(0, 0)
        for continuity in PHASES:
            phase = _run_phase(continuity, workers, clients, duration / len(PHASES), _worker_env(url, prefix, key),
                               status)
            if phase is None:
                return EXIT_FAILED
            if (now := _moved(url, prefix)) is not None:  # the registry's totals so far: this part's is the rise
                phase.moved, counted = Moved(now.forwarded - counted.forwarded, now.adopted - counted.adopted), now
            phases.append(phase)
        status.print(_comparison_table(phases))

        code = run_audit(url, prefix=prefix, since=None, as_json=as_json, console=console)
        status.print(GRAFANA_HINT)
        broken = sum(p.summary.session_not_found for p in phases if p.continuity != "off")
        if code == 0 and broken:
            status.print(f"mcp-registry demo: {broken} legacy session(s) broke with continuity on", style="red")
            return EXIT_FAILED
        return code


@dataclass(frozen=True)
class Moved:
    forwarded: int
    """Requests a worker forwarded to the session's owner (from the registry)."""
    adopted: int
    """Sessions a worker took over from one that was gone or going."""


@dataclass
class Phase:
    continuity: str
    summary: TrafficSummary
    balanced: dict[str, int]
    """HTTP requests the balancer sent to each worker."""
    restarted: str | None = None
    """The worker deployed mid-run, if any."""
    moved: Moved | None = None
    """What the registry counted in this part (None: it could not be read)."""


def _run_phase(
    continuity: str, workers: int, clients: int, duration: float, env: dict[str, str], status: Console
) -> Phase | None:  # fmt: skip
    """One half of the traffic with `MCP_SESSION_CONTINUITY=continuity`; its processes are stopped on return."""
    with ExitStack() as phase_stack:
        with status.status(f"Starting {workers} workers (continuity {continuity}) and the balancer…"):
            cluster = phase_stack.enter_context(WorkerCluster(workers, env={**env, ENV_CONTINUITY: continuity}))
            balancer = phase_stack.enter_context(Balancer(cluster.urls))
        status.rule(f"continuity {continuity}")
        status.print(f"Workers: {', '.join(f'{w} {u}' for w, u in zip(cluster.worker_ids, cluster.urls, strict=True))}")
        status.print(f"Balancer (non-sticky, per request): {balancer.url}")
        restarted = cluster.worker_ids[RESTARTED] if continuity == "adopt" else None

        def deploy() -> None:
            status.print(f"Deploying {restarted}: SIGTERM, then the new process on the same port…")
            cluster.restart(RESTARTED)
            status.print(f"{restarted} is back; its sessions were taken over by the others meanwhile")

        midway = deploy if restarted is not None else None
        plan = TrafficPlan.for_clients(clients)
        if restarted is not None:  # sessions as agents hold them, long enough to span the deploy
            plan = replace(plan, calls_per_session=LONG_SESSION_CALLS)
        summary = _drive_with_progress(balancer.url, duration, plan, status, midway)
        balanced = balancer.stats()
        if summary.tool_calls == 0:
            for index, worker in enumerate(cluster.worker_ids):
                status.rule(f"{worker} log (last lines)")
                status.print(log_tail(cluster.log_path(index)), markup=False, highlight=False)
            status.print("mcp-registry demo: no tool call succeeded; see the worker logs above", style="red")
            return None
        with status.status("Stopping the workers (the registry drains)…"):
            balancer.stop()
            cluster.stop()
    return Phase(continuity, summary, balanced, restarted)


def _moved(url: str, prefix: str) -> Moved | None:
    try:
        report = read_report(url, prefix=prefix, since=3600)
    except (redis.RedisError, OSError, ValueError):
        return None
    return Moved(report.lookups_by_action.get("forward", 0), sum(n for _, n in report.takeover.adopted))


def _worker_env(url: str, prefix: str, key: str) -> dict[str, str]:
    return {
        ENV_HASH_KEY: key,
        ENV_REGISTRY: "1",
        ENV_URL: url,
        ENV_PREFIX: prefix,
        ENV_REFRESH_SECONDS: REFRESH_SECONDS,
        ENV_RETENTION_SECONDS: "3600",
    }


def _unreachable(url: str) -> str | None:
    """Why the Redis at `url` cannot be used, or None when it answers PING."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        with contextlib.closing(client):
            client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _drive_with_progress(
    url: str, duration: float, plan: TrafficPlan, console: Console, midway: Callable[[], None] | None = None
) -> TrafficSummary:
    """Traffic for `duration` seconds; `midway` (blocking) runs in a thread halfway through, traffic going on."""
    summary = TrafficSummary()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )  # fmt: skip

    def describe() -> str:
        return (
            f"traffic: {summary.requests} requests · {summary.sessions_opened} sessions · "
            f"{summary.session_not_found} × 404 after a hop · {summary.modern_calls} sessionless calls"
        )

    async def main() -> None:
        task = progress.add_task(describe(), total=duration)
        started = time.monotonic()
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                while True:
                    progress.update(task, completed=time.monotonic() - started, description=describe())
                    await anyio.sleep(0.25)

            tg.start_soon(tick)
            if midway is not None:

                async def halfway() -> None:
                    await anyio.sleep(duration / 2)
                    await anyio.to_thread.run_sync(midway)

                tg.start_soon(halfway)
            await drive_traffic(url, duration=duration, plan=plan, summary=summary)
            tg.cancel_scope.cancel()  # (a deploy under way in its thread finishes first: threads are not cancelled)
        progress.update(task, completed=duration, description=describe())

    with progress:
        anyio.run(main)
    return summary


def _comparison_table(phases: list[Phase]) -> Table:
    table = Table(title="Legacy clients without and with continuity", title_justify="left")
    table.add_column("")
    for phase in phases:
        table.add_column(f"continuity {phase.continuity}", justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("worker deployed mid-run (SIGTERM, then the new process)", [p.restarted or "—" for p in phases]),
        ("legacy sessions opened (official client, mode=legacy)", [str(p.summary.sessions_opened) for p in phases]),
        ("sessions broken: 404 'Session not found' after a worker hop",
         [str(p.summary.session_not_found) for p in phases]),
        ("  (the demo's clients then open a new session; real clients do not)",
         [str(p.summary.reinitializations) for p in phases]),
        ("successful tool calls (of which sessionless)",
         [f"{p.summary.tool_calls} ({p.summary.modern_calls})" for p in phases]),
        ("requests forwarded to the session's owner",
         ["—" if p.moved is None else str(p.moved.forwarded) for p in phases]),
        ("sessions taken over from a worker that was deployed",
         ["—" if p.moved is None or p.restarted is None else str(p.moved.adopted) for p in phases]),
        ("requests with made-up / malformed ids",
         [f"{p.summary.fabricated_sent} / {p.summary.malformed_sent}" for p in phases]),
        ("other errors", [str(p.summary.errors) for p in phases]),
        ("HTTP requests per worker (balancer)",
         [", ".join(str(n) for _, n in sorted(p.balanced.items())) for p in phases]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that `kill <pid>` also stops every child in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """The official client warns on every failed session termination; a demo expects many."""
    logger = logging.getLogger("mcp.client")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
