"""Part two: the registry at scale, in a real redis-server, written by the real `RegistryWriter`.

A deployment of `sessions` live sessions is simulated as workers of at most `per_worker`
sessions each (the SDK's `max_sessions` default), each a real `RegistryWriter` whose
`SessionBook` holds its sessions: its first pass re-asserts every live session
(`SET P:s:{H} <worker> EX ttl`, pipelined in chunks) and writes the worker's heartbeat
(`P:w:{W}`, `P:workers`), exactly what it does every refresh interval and after Redis restarts.
One more worker receives its sessions as `SessionOpened` events through the writer's queue, the
path a new session takes, which also writes the per-minute counters; that run measures the
writer's event throughput and batch sizes.

At each size: Redis memory per live session (`INFO memory` used_memory delta / sessions) and the
time of `mcp-registry audit --json` (the CLI, as a user runs it) and of its reader in-process.

The same deployment is written twice, side by side in one run: to one `redis-server`, and to a
Redis Cluster of three masters (`redis+cluster://`, one loopback address per node, memory summed
over the masters), so that what the cluster costs or gains is a ratio of the same machine's figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import redis

from bench.procs import BenchError, RedisServer
from mcp_registry.config import RegistryConfig
from mcp_registry.demo.redis_cluster import LocalCluster
from mcp_registry.registry import key_schema
from mcp_registry.registry.client import RegistryRedis, connect
from mcp_registry.registry.events import ClientInfo, SessionOpened
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.reader import read_audit
from mcp_registry.registry.writer import RegistryWriter
from mcp_registry.sessions import SessionBook
from mcp_registry.telemetry import RequestStats, Telemetry

PREFIX: Final = "benchscale"
REFRESH_SECONDS: Final = 3600.0
"""The simulated deployment's refresh interval: long, so nothing expires while it is measured."""
HASH_KEY: Final = b"P9nC_KBDJBn_0vo3bQNCZ4LMzH9LphEBUEGK8ITreB4"
CLIENT: Final = ClientInfo("bench-client", "1.0", "2025-11-25")
WAIT_SECONDS: Final = 120.0


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    sizes: tuple[int, ...]
    per_worker: int
    audit_runs: int


@dataclass(frozen=True, slots=True)
class ScalePoint:
    sessions: int
    workers: int
    session_keys: int
    """`P:s:{*}` keys Redis holds (counted with SCAN)."""
    memory_delta: int
    audit_cli_seconds: float
    """Median wall time of `mcp-registry audit --json` (process start included)."""
    audit_reader_seconds: float
    """Median time of the audit's reader (`read_audit`) in-process: the Redis work alone."""
    audit_live: int
    """`sessions.live` in the audit's JSON: what it saw."""

    @property
    def bytes_per_session(self) -> float:
        return self.memory_delta / self.sessions if self.sessions else float("nan")


@dataclass(frozen=True, slots=True)
class WriterRun:
    events: int
    seconds: float
    batches: tuple[int, ...]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


ONE_NODE: Final = "one node"
CLUSTER: Final = "cluster, 3 masters"
TOPOLOGIES: Final = (ONE_NODE, CLUSTER)


@dataclass
class ScaleResult:
    settings: ScaleSettings
    topology: str = ONE_NODE
    points: list[ScalePoint] = field(default_factory=list)
    event_writer: WriterRun | None = None
    refresh_rates: list[float] = field(default_factory=list)
    """Sessions per second the refresh pass re-asserted, one value per simulated worker."""
    cli_floor_seconds: float = 0.0
    """`mcp-registry audit --help`: the CLI's start-up alone."""


class RecordingTelemetry(Telemetry):
    """The writer's telemetry, also remembering every pipelined round trip (operation, batch)."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id=worker_id, stats=RequestStats(), live_sessions=lambda: 0, queue_depth=lambda: 0)
        self.round_trips: list[tuple[str, int, float]] = []
        self._changed = anyio.Event()

    def redis_round_trip(self, operation: str, seconds: float, batch: int, *, failed: bool) -> None:
        super().redis_round_trip(operation, seconds, batch, failed=failed)
        if not failed:
            self.round_trips.append((operation, batch, time.monotonic()))
        self._changed.set()
        self._changed = anyio.Event()

    async def next_round_trip(self, *, after: int) -> None:
        """Wait (bounded) until more than `after` round trips were recorded."""
        await self.until(lambda: len(self.round_trips) > after)

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait (bounded) until `check()` holds; it is tested after every round trip."""
        with anyio.fail_after(WAIT_SECONDS):
            while not check():
                await self._changed.wait()


def _writer(
    url: str, worker: str, queue_size: int, live: dict[str, object] | None = None, book: SessionBook | None = None
) -> tuple[RegistryWriter, SessionBook, dict[str, object], RecordingTelemetry]:
    config = RegistryConfig(enabled=True, url=url, prefix=PREFIX, worker_id=worker, hash_key=HASH_KEY,
                            refresh_seconds=REFRESH_SECONDS, queue_size=queue_size)
    live = {} if live is None else live
    book = SessionBook(live) if book is None else book
    telemetry = RecordingTelemetry(worker)
    writer = RegistryWriter(config, live=book.ids, stats=telemetry.stats, telemetry=telemetry,
                            hasher=IdHasher(HASH_KEY))
    return writer, book, live, telemetry


async def write_by_events(url: str, worker: str, count: int) -> WriterRun:
    """Open `count` sessions as events through the writer's queue; time until all are in Redis.

    Then the worker's next refresh pass runs (a new writer on the same book, as after a restart),
    so that its heartbeat counts the sessions as live like every other worker's.
    """
    writer, book, live, telemetry = _writer(url, worker, queue_size=count + 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        # Let the first pass (heartbeat) go by, so that only the events are timed.
        await telemetry.until(lambda: any(op == "refresh" for op, _, _ in telemetry.round_trips))
        started = time.monotonic()
        for _ in range(count):
            session_id = uuid.uuid4().hex
            live[session_id] = None
            if not writer.submit(SessionOpened(session_id, book.opened(session_id).created_at, CLIENT)):
                raise BenchError("the writer's queue refused an event")

        def written() -> int:
            return sum(batch for op, batch, _ in telemetry.round_trips if op == "sessions")

        await telemetry.until(lambda: written() >= count)
        finished = max(t for op, _, t in telemetry.round_trips if op == "sessions")
        # Counters are flushed every few seconds: wait for one flush so the audit sees them.
        await telemetry.until(lambda: any(op == "counters" for op, _, _ in telemetry.round_trips))
        tg.cancel_scope.cancel()  # no shutdown pass: the worker stays registered as alive
    await _refresh_pass(url, worker, live, book)
    batches = tuple(batch for op, batch, _ in telemetry.round_trips if op == "sessions")
    return WriterRun(count, finished - started, batches)


async def write_by_refresh(url: str, worker: str, count: int) -> float:
    """A worker holding `count` sessions makes its refresh pass; returns sessions re-asserted per second."""
    live: dict[str, object] = {}
    book = SessionBook(live)
    for _ in range(count):
        session_id = uuid.uuid4().hex
        live[session_id] = None
        book.opened(session_id)
    return count / await _refresh_pass(url, worker, live, book)


async def _refresh_pass(url: str, worker: str, live: dict[str, object], book: SessionBook) -> float:
    """Run a writer on `book` until its first pass (every live session and the heartbeat) is written."""
    writer, _, _, telemetry = _writer(url, worker, queue_size=16, live=live, book=book)
    redis: RegistryRedis = connect(RegistryConfig(url=url, redis_timeout=5.0))
    worker_key = key_schema.KeySchema(PREFIX).worker(worker)
    try:
        await redis.delete(worker_key)
        async with anyio.create_task_group() as tg:
            started = time.monotonic()
            tg.start_soon(writer.run)
            # The heartbeat is the refresh pass's last command: once it is there, the pass is done.
            while True:
                seen = len(telemetry.round_trips)
                if await redis.hget(worker_key, "live") == str(len(book)):
                    break
                await telemetry.next_round_trip(after=seen)
            seconds = time.monotonic() - started
            tg.cancel_scope.cancel()
    finally:
        await redis.aclose()
    return seconds


def _audit_command() -> list[str]:
    script = Path(sys.executable).parent / "mcp-registry"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_registry.cli"]


def _time_cli(arguments: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([*_audit_command(), *arguments], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"mcp-registry {' '.join(arguments)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, done.stdout


async def _time_reader(url: str, runs: int) -> float:
    redis = connect(RegistryConfig(url=url, redis_timeout=30.0), max_connections=1)
    ttl = RegistryConfig(refresh_seconds=REFRESH_SECONDS).session_ttl_seconds
    times: list[float] = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            await read_audit(redis, prefix=PREFIX, since_seconds=3600, now=time.time(), session_ttl=ttl)
            times.append(time.monotonic() - started)
    finally:
        await redis.aclose()
    return statistics.median(times)


class _Store:
    """Where the simulated deployment writes: one redis-server, or every master of a cluster."""

    def __init__(self, topology: str, workdir: Path) -> None:
        self._single: RedisServer | None = None
        self._cluster: LocalCluster | None = None
        if topology == ONE_NODE:
            self._single = RedisServer(workdir).start()
            self.url = self._single.url
        else:
            try:
                self._cluster = LocalCluster(masters=3).start()
            except (OSError, RuntimeError) as exc:
                raise BenchError(f"the Redis Cluster did not start: {exc}") from exc
            self.url = self._cluster.url

    def _clients(self) -> list[redis.Redis]:
        if self._single is not None:
            return [self._single.client()]
        assert self._cluster is not None
        return [redis.Redis(host=n.host, port=n.port, decode_responses=True, socket_timeout=30)
                for n in self._cluster.masters()]

    def used_memory(self) -> int:
        total = 0
        for client in self._clients():
            with client:
                total += int(client.info("memory")["used_memory"])
        return total

    def session_keys(self) -> int:
        total = 0
        for client in self._clients():
            with client:
                total += sum(1 for _ in client.scan_iter(match=key_schema.KeySchema(PREFIX).session("*"), count=10_000))
        return total

    def stop(self) -> None:
        if self._single is not None:
            self._single.stop()
        if self._cluster is not None:
            self._cluster.stop()


def run(
    settings: ScaleSettings, workdir: Path, progress: Callable[[str], None], topologies: tuple[str, ...] = TOPOLOGIES
) -> list[ScaleResult]:
    """The same deployment on each topology, one after the other on this machine."""
    return [_run_on(topology, settings, workdir, progress) for topology in topologies]


def _run_on(topology: str, settings: ScaleSettings, workdir: Path, progress: Callable[[str], None]) -> ScaleResult:
    result = ScaleResult(settings, topology)
    store = _Store(topology, workdir)
    try:
        baseline = store.used_memory()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
        env["MCP_SESSION_REGISTRY_REFRESH_SECONDS"] = f"{REFRESH_SECONDS:g}"
        audit_args = ["audit", "--json", "--since", "1h", "--url", store.url, "--prefix", PREFIX]
        result.cli_floor_seconds = statistics.median(
            _time_cli(["audit", "--help"], env)[0] for _ in range(settings.audit_runs))

        first = min(settings.per_worker, settings.sizes[0])
        progress(f"writer ({topology}): {first} sessions as events through the queue")
        result.event_writer = anyio.run(write_by_events, store.url, "bench-events", first)
        sessions, workers = first, 1
        for size in settings.sizes:
            while sessions < size:
                count = min(settings.per_worker, size - sessions)
                rate = anyio.run(write_by_refresh, store.url, f"bench-w{workers}", count)
                result.refresh_rates.append(rate)
                sessions += count
                workers += 1
            progress(f"scale ({topology}): {sessions} sessions in {workers} workers written; measuring")
            times = [_time_cli(audit_args, env) for _ in range(settings.audit_runs)]
            report = json.loads(times[-1][1])
            result.points.append(ScalePoint(
                sessions=sessions,
                workers=workers,
                session_keys=store.session_keys(),
                memory_delta=store.used_memory() - baseline,
                audit_cli_seconds=statistics.median(t for t, _ in times),
                audit_reader_seconds=anyio.run(_time_reader, store.url, max(3, settings.audit_runs)),
                audit_live=int(report["sessions"]["live"]),
            ))
    finally:
        store.stop()
    return result
