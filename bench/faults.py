"""`python -m bench.faults`: what Redis faults and floods of made-up ids do to MCP requests.

Starts a real `redis-server` and real uvicorn workers of the demo app (registry on, refresh every
second, `gc.freeze()` after start-up as bench/apps.py does). For each fault it measures a window
of load without the fault, one with it and one more without it once the registry has recovered,
in the same processes, and reports p99 during the fault as a ratio of the better no-fault window
(median of `--reps` runs; each run first waits for a quiet machine). An A/A control (no fault at
all) shows the method's own noise. Load is `wrk` (bench/wrk/mcp.lua, `stateful`: each
connection's own session) on worker-0, plus a light churn from this process on every worker (new
sessions, calls, hops, made-up ids, DELETEs), every answer checked. Then, on one fresh worker, a
flood of 10^5 distinct made-up ids against plain calls on own sessions: throughput, RSS, Redis
`GET` calls, what was skipped.

Writes its tables into docs/reliability.md between `<!-- bench:faults:begin -->` and
`<!-- bench:faults:end -->`; docs/reliability.md says what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import anyio
import httpx
import redis
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client.parser import text_string_to_metric_families

from bench.load import WrkResult, run_wrk
from bench.procs import BenchError, require_binary, wait_for_quiet
from bench.report import machine, write_section
from mcp_registry.demo import _process
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.demo.telemetry_setup import ENV_PROMETHEUS_PORT
from mcp_registry.env import ENV_PREFIX, ENV_REFRESH_SECONDS, ENV_REGISTRY, ENV_URL
from mcp_registry.registry import hasher, key_schema

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
REPORT: Final = REPO_ROOT / "docs" / "reliability.md"
LEGACY_VERSION: Final = "2025-11-25"
CALL: Final = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
INITIALIZE: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench-faults","version":"1.0"}}}'
)


# --- floods: pipelined raw HTTP/1.1 ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FloodResult:
    requests: int
    seconds: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request(host: bytes, body: bytes, session_id: str | None) -> bytes:
    lines = [
        b"POST /mcp HTTP/1.1",
        b"host: " + host,
        b"accept: application/json, text/event-stream",
        b"content-type: application/json",
        b"mcp-protocol-version: " + LEGACY_VERSION.encode(),
        b"content-length: " + str(len(body)).encode(),
    ]
    if session_id is not None:
        lines.append(b"mcp-session-id: " + session_id.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _response(stream: BufferedByteReceiveStream) -> tuple[int, dict[bytes, bytes]]:
    """Read one response (status, lower-cased headers); its body must have a content-length."""
    head = await stream.receive_until(b"\r\n\r\n", 65536)
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get(b"content-length")
    if length is None:
        raise RuntimeError(f"a response without content-length: {head!r}")
    if int(length):
        await stream.receive_exactly(int(length))
    return int(status_line.split()[1]), headers


async def _connection(
    host: str, port: int, count: int, depth: int, next_id: Callable[[], str] | None, statuses: Counter[int]
) -> None:
    """`count` calls over one connection, `depth` in flight. `next_id=None`: this connection opens a
    session first and every call uses it (the plain case); otherwise each call carries `next_id()`."""
    stream: SocketStream = await anyio.connect_tcp(host, port)
    async with stream:
        reader = BufferedByteReceiveStream(stream)
        host_header = f"{host}:{port}".encode()
        own: str | None = None
        if next_id is None:
            await stream.send(_request(host_header, INITIALIZE, None))
            status, headers = await _response(reader)
            if status != 200 or b"mcp-session-id" not in headers:
                raise RuntimeError(f"initialize answered {status}")
            own = headers[b"mcp-session-id"].decode()
        done = 0
        while done < count:
            batch = min(depth, count - done)
            await stream.send(
                b"".join(_request(host_header, CALL, own if next_id is None else next_id()) for _ in range(batch))
            )
            for _ in range(batch):
                status, _ = await _response(reader)
                statuses[status] += 1
            done += batch


def distinct_ids(prefix: str) -> Callable[[int], str]:
    """Made-up ids `<prefix>-<n>`, one per request."""
    return lambda n: f"{prefix}-{n:08d}"


async def flood(
    url: str,
    total: int,
    ids: Callable[[int], str] | None,
    *,
    connections: int = 8,
    depth: int = 32,
) -> FloodResult:
    """`total` legacy `tools/call` requests to `url` over `connections` pipelined connections.

    Request `n` carries the id `ids(n)` (a stateful worker that never issued it answers 404); with
    `ids=None` each connection opens its own session first and calls on it (plain traffic, 200).
    Callers bound it in time (`anyio.fail_after`).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    statuses: Counter[int] = Counter()
    numbers = iter(range(total))
    next_id = None if ids is None else (lambda: ids(next(numbers)))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for number in range(connections):
            share = total // connections + (number < total % connections)
            tg.start_soon(_connection, host, port, share, depth, next_id, statuses)
    return FloodResult(requests=total, seconds=time.monotonic() - started, statuses=dict(statuses))


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# --- the deployment under test -------------------------------------------------------------------
PREFIX: Final = "benchfaults"
APP: Final = "bench.faults:app"
REFRESH_SECONDS: Final = 1
UNAVAILABLE: Final = "mcp_registry: Redis is unavailable"
BACK: Final = "mcp_registry: Redis is back after"
RECOVERY_TIMEOUT: Final = 30.0
HELD_BY_STOPPED_WORKER: Final = 20
HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                  "mcp-protocol-version": LEGACY_VERSION}  # fmt: skip
Progress = Callable[[str], None]


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        ENV_REGISTRY: "1", ENV_URL: redis_url, ENV_PREFIX: PREFIX, ENV_REFRESH_SECONDS: str(REFRESH_SECONDS),
        "COLUMNS": "500", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", **extra,
    }  # fmt: skip


@dataclass
class Deployment:
    """A Redis and a cluster of demo workers, each worker with a Prometheus endpoint."""

    redis_server: RedisServer
    cluster: WorkerCluster
    metrics_ports: list[int]

    @classmethod
    def start(cls, stack: contextlib.ExitStack, redis: RedisServer, workers: int, **extra: str) -> Deployment:
        ports = _process.free_ports(workers)
        cluster = WorkerCluster(
            workers, app=APP, env=worker_env(redis.url, **extra),
            worker_env=lambda i: {ENV_PROMETHEUS_PORT: str(ports[i])},
        )  # fmt: skip
        stack.enter_context(cluster)
        return cls(redis, cluster, ports)

    def metric(self, name: str, index: int | None = None, **labels: str) -> float:
        """The sum of `name`'s samples with `labels` on worker `index` (every running worker: None)."""
        total = 0.0
        for i, port in enumerate(self.metrics_ports):
            if (index is not None and i != index) or not self.cluster.running(i):
                continue
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                        total += sample.value
        return total

    def warnings(self) -> str:
        """`unavailable/back` lines in each worker's log, e.g. `1/1, 1/1`."""
        logs = [self.cluster.log(i) for i in range(len(self.cluster.worker_ids))]
        return ", ".join(f"{log.count(UNAVAILABLE)}/{log.count(BACK)}" for log in logs)

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url, decode_responses=True, socket_timeout=5)


DROPPED: Final = "mcp_registry_queue_dropped_total"
LOOKUPS: Final = "mcp_registry_session_lookups_total"


# --- churn: light MCP traffic whose every answer is checked --------------------------------------
@dataclass
class Tally:
    requests: int = 0
    failures: int = 0
    slowest: float = 0.0
    examples: list[str] = field(default_factory=list)


class Churn:
    """From a thread: on each worker in turn, every `period` seconds, open a session, call on it, hop
    to the next worker with it, send a made-up id and DELETE the session."""

    def __init__(self, urls: list[str], period: float = 0.05) -> None:
        self.urls = urls
        self.period = period
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: anyio.run(self._run), daemon=True)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _expect(self, http: httpx.AsyncClient, method: str, url: str, status: int, body: bytes | None,
                      session_id: str | None) -> httpx.Response | None:  # fmt: skip
        headers = dict(HEADERS) | ({"mcp-session-id": session_id} if session_id else {})
        started = time.monotonic()
        self.tally.requests += 1
        response: httpx.Response | None = None
        try:
            response = await http.request(method, url + "/mcp", content=body, headers=headers)
            problem = "" if response.status_code == status else f"{method} answered {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{method}: {exc!r}"
        self.tally.slowest = max(self.tally.slowest, time.monotonic() - started)
        if problem:
            self.tally.failures += 1
            if len(self.tally.examples) < 5:
                self.tally.examples.append(problem)
            return None
        return response

    async def _run(self) -> None:
        turn = 0
        async with httpx.AsyncClient(timeout=15) as http:
            while not self._stop.is_set():
                url, other = self.urls[turn % len(self.urls)], self.urls[(turn + 1) % len(self.urls)]
                turn += 1
                opened = await self._expect(http, "POST", url, 200, INITIALIZE, None)
                if opened is not None:
                    session_id = opened.headers["mcp-session-id"]
                    await self._expect(http, "POST", url, 200, CALL, session_id)
                    if other != url:
                        await self._expect(http, "POST", other, 404, CALL, session_id)
                    await self._expect(http, "POST", url, 404, CALL, f"made-up-{turn}-{time.monotonic_ns()}")
                    await self._expect(http, "DELETE", url, 200, None, session_id)
                await anyio.sleep(self.period)


# --- windows and faults --------------------------------------------------------------------------
@dataclass
class Window:
    wrk: WrkResult
    churn: Tally
    dropped: float
    """Events the workers dropped (queue or backlog full, rate-limited), by the metric."""
    unverified: float
    """Stale ids the workers could not classify (Redis did not answer, or the lookup was skipped)."""

    @property
    def requests(self) -> int:
        return self.wrk.requests + self.churn.requests

    @property
    def failures(self) -> int:
        return self.wrk.bad + self.wrk.socket_errors + self.churn.failures


def measure(deployment: Deployment, seconds: int, connections: int, *, churn_on: list[int] | None = None) -> Window:
    """wrk (`stateful`) on worker-0 for `seconds`, churn on the workers `churn_on` (all by default)."""
    urls = deployment.cluster.urls
    targets = [urls[i] for i in (churn_on if churn_on is not None else range(len(urls)))]
    dropped, unverified = (
        deployment.metric(DROPPED),
        deployment.metric(LOOKUPS, mcp_registry_session_status="unverified"),
    )
    with Churn(targets) as churn:
        wrk = run_wrk(urls[0] + "/mcp", "stateful", seconds=seconds, connections=connections, cpus=None)
    time.sleep(0.5)  # the last lookups' grace period
    return Window(
        wrk,
        churn.tally,
        deployment.metric(DROPPED) - dropped,
        deployment.metric(LOOKUPS, mcp_registry_session_status="unverified") - unverified,
    )


def warm_up(deployment: Deployment, connections: int) -> None:
    run_wrk(deployment.cluster.urls[0] + "/mcp", "stateful", seconds=2, connections=connections, cpus=None)


def recovery_seconds(deployment: Deployment, started: float, workers: list[int] | None = None) -> float:
    """Open a session on each worker now; seconds from `started` until Redis has all of them."""
    indexes = workers if workers is not None else list(range(len(deployment.cluster.urls)))
    probes = {}
    for index in indexes:
        response = httpx.post(deployment.cluster.urls[index] + "/mcp", content=INITIALIZE, headers=HEADERS, timeout=10)
        probes[response.headers["mcp-session-id"]] = deployment.cluster.worker_ids[index]
    schema = key_schema.KeySchema(PREFIX)
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    with deployment.redis_client() as r:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                key = r.get(schema.hash_key)
                if key is not None and all(
                    r.get(schema.session(hasher.id_hash(key.encode(), sid))) == worker for sid, worker in probes.items()
                ):
                    return time.monotonic() - started
            time.sleep(0.05)
    raise BenchError(f"the registry did not record new sessions within {RECOVERY_TIMEOUT:g}s of the fault's end")


@dataclass(frozen=True)
class Fault:
    name: str
    apply: Callable[[Deployment], Callable[[], object]]
    """Start the fault; returns what ends it."""
    instant: bool = False
    """Over as soon as applied (a restart): recovery is timed from then, before the window."""


class Filler:
    """Writes 1 KiB junk keys (outside the registry's prefix), `rate` a second, from a thread."""

    def __init__(self, url: str, rate: float) -> None:
        self._url = url
        self._rate = rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with redis.Redis.from_url(self._url, socket_timeout=5) as r:
            n = 0
            while not self._stop.wait(1 / self._rate):
                with contextlib.suppress(redis.RedisError):
                    r.set(f"junk:{n}", b"x" * 1024)
                n += 1


def _at_maxmemory(deployment: Deployment, policy: str, headroom: int) -> Callable[[], None]:
    """`maxmemory` at what Redis uses now plus `headroom` bytes (negative: already over it)."""
    with deployment.redis_client() as r:
        r.config_set("maxmemory-policy", policy)
        r.config_set("maxmemory", max(1, int(r.info("memory")["used_memory"]) + headroom))

    def end() -> None:
        with deployment.redis_client() as r:
            r.config_set("maxmemory", 0)
            r.config_set("maxmemory-policy", "noeviction")

    return end


def _evicting(deployment: Deployment) -> Callable[[], None]:
    """Full and evicting before the window starts; junk keeps arriving (200 KiB/s) during it."""
    end_maxmemory = _at_maxmemory(deployment, "allkeys-lru", 256 * 1024)
    with deployment.redis_client() as r:
        for n in range(100_000):  # until Redis evicts (a bounded number of keys)
            if n % 100 == 0 and int(r.info("stats")["evicted_keys"]) > 0:
                break
            r.set(f"junk:prefill:{n}", "x" * 1024)
    filler = Filler(deployment.redis_server.url, rate=200)

    def end() -> None:
        filler.stop()
        end_maxmemory()

    return end


def _killed(deployment: Deployment) -> Callable[[], object]:
    deployment.redis_server.kill()
    return deployment.redis_server.start


def _paused(deployment: Deployment) -> Callable[[], object]:
    deployment.redis_server.pause()
    return deployment.redis_server.resume


def _restarted(deployment: Deployment) -> Callable[[], object]:
    deployment.redis_server.restart()
    return lambda: None


FAULTS: Final = (
    Fault("no fault at all (A/A control: what noise alone does to these windows)", lambda d: lambda: None),
    Fault("Redis killed (SIGKILL) for the window, then started empty", _killed),
    Fault("Redis paused (SIGSTOP) for the window: slow, not down", _paused),
    Fault("Redis restarted empty (SIGTERM, start) just before the window", _restarted, instant=True),
    Fault("Redis at `maxmemory`, `noeviction`: every write refused (OOM)",
          lambda d: _at_maxmemory(d, "noeviction", -(10**9))),
    Fault("Redis at `maxmemory`, `allkeys-lru`: evicting while junk is written", _evicting),
)  # fmt: skip


@dataclass
class Run:
    """One repetition of a scenario: a fault window between two no-fault windows, and what followed."""

    baselines: tuple[Window, Window]
    """Just before the fault and once it is over (recovered), in the same processes."""
    during: Window
    recovery: float
    warnings: str
    stopped: float | None = None
    """A stopped worker: how long stopping it took."""
    ended: str = ""
    """A stopped worker: how many of its sessions the counters record as ended, and why."""

    @property
    def baseline_p99_us(self) -> float:
        """The better of the two no-fault windows: a GC pass in one of them does not flatter the fault."""
        return float(min(window.wrk.p99_us for window in self.baselines))

    @property
    def ratio(self) -> float:
        return self.during.wrk.p99_us / self.baseline_p99_us if self.baseline_p99_us else math.nan

    @property
    def p50_ratio(self) -> float:
        baseline = min(window.wrk.p50_us for window in self.baselines)
        return self.during.wrk.p50_us / baseline if baseline else math.nan


@dataclass
class Row:
    scenario: str
    runs: list[Run] = field(default_factory=list)
    note: str = ""


def quiet(deployment: Deployment, settings: Settings) -> None:
    """Before a pair of windows: wait (bounded) until other processes leave the machine alone, then
    one unmeasured second of load, so that the first measured window does not start from idle."""
    wait_for_quiet(settings.quiet_cores, max_wait=60)
    run_wrk(deployment.cluster.urls[0] + "/mcp", "stateful", seconds=1, connections=settings.connections, cpus=None)


def redis_fault_once(deployment: Deployment, fault: Fault, settings: Settings, progress: Progress) -> Run:
    quiet(deployment, settings)
    progress(f"{fault.name}: no-fault, fault and no-fault windows")
    before = measure(deployment, settings.seconds, settings.connections)
    logged = deployment.warnings()
    end = fault.apply(deployment)
    recovery = recovery_seconds(deployment, time.monotonic()) if fault.instant else None
    try:
        during = measure(deployment, settings.seconds, settings.connections)
    finally:
        end()
    if recovery is None:
        recovery = recovery_seconds(deployment, time.monotonic())
    time.sleep(REFRESH_SECONDS)  # the "back" lines are logged once the writer has written again
    after = measure(deployment, settings.seconds, settings.connections)
    return Run((before, after), during, recovery, f"{logged} → {deployment.warnings()}")


def absent_once(settings: Settings, progress: Progress) -> Run:
    """Workers started while Redis is absent; Redis appears after the window."""
    with contextlib.ExitStack() as stack:
        redis_server = RedisServer(embedded=False)  # its port is chosen; nothing listens there yet
        stack.callback(redis_server.stop)
        deployment = Deployment.start(stack, redis_server, 2)
        warm_up(deployment, settings.connections)
        quiet(deployment, settings)
        progress("Redis absent at start-up: window without Redis, then two no-fault windows")
        during = measure(deployment, settings.seconds, settings.connections)
        redis_server.start()
        recovery = recovery_seconds(deployment, time.monotonic())
        baselines = (
            measure(deployment, settings.seconds, settings.connections),
            measure(deployment, settings.seconds, settings.connections),
        )
        return Run(baselines, during, recovery, deployment.warnings())


def worker_faults_once(settings: Settings, progress: Progress) -> list[Run]:
    """Three workers: SIGTERM worker-2, then SIGKILL worker-1; wrk and churn stay on worker-0."""
    runs = []
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(embedded=False))
        deployment = Deployment.start(stack, redis_server, 3)
        warm_up(deployment, settings.connections)
        for index, how, reason in ((2, "SIGTERM", "shutdown"), (1, "SIGKILL", "worker_lost")):
            held = _open_sessions(deployment.cluster.urls[index], HELD_BY_STOPPED_WORKER)
            worker = deployment.cluster.worker_ids[index]
            quiet(deployment, settings)
            progress(f"a worker stopped with {how}: no-fault, {how} and no-fault windows")
            before = measure(deployment, settings.seconds, settings.connections, churn_on=[0])
            with Churn([deployment.cluster.urls[0]]) as churn, OffTheList(deployment, worker) as off_the_list:
                if how == "SIGTERM":
                    deployment.cluster.terminate(index)
                else:
                    deployment.cluster.kill(index)
                stopped = time.monotonic() - off_the_list.started
                wrk = run_wrk(deployment.cluster.urls[0] + "/mcp", "stateful", seconds=settings.seconds,
                              connections=settings.connections, cpus=None)  # fmt: skip
            gone = off_the_list.after()
            ended = _wait_ended(deployment, worker, reason, held)
            after = measure(deployment, settings.seconds, settings.connections, churn_on=[0])
            runs.append(Run((before, after), Window(wrk, churn.tally, 0.0, 0.0), gone, deployment.warnings(),
                            stopped, f"{ended} `{reason}`"))  # fmt: skip
    return runs


class OffTheList:
    """From a thread: how long after entering until `worker` is no longer in the `P:workers` list."""

    def __init__(self, deployment: Deployment, worker: str) -> None:
        self._deployment = deployment
        self._worker = worker
        self._gone: float | None = None
        self.started = 0.0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> OffTheList:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=RECOVERY_TIMEOUT)

    def after(self) -> float:
        if self._gone is None:
            raise BenchError(f"{self._worker} was still listed {RECOVERY_TIMEOUT:g}s after it stopped")
        return self._gone

    def _watch(self) -> None:
        schema = key_schema.KeySchema(PREFIX)
        with self._deployment.redis_client() as r:
            while time.monotonic() < self.started + RECOVERY_TIMEOUT:
                if r.zscore(schema.workers, self._worker) is None:
                    self._gone = time.monotonic() - self.started
                    return
                time.sleep(0.02)


def _wait_ended(deployment: Deployment, worker: str, reason: str, held: int) -> int:
    """Wait until the counters record `held` sessions of `worker` as ended for `reason`."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    with deployment.redis_client() as r:
        while (ended := _ended_sessions(r, worker, reason)) < held and time.monotonic() < deadline:
            time.sleep(0.05)
    return ended


def _open_sessions(url: str, count: int) -> int:
    for _ in range(count):
        response = httpx.post(url + "/mcp", content=INITIALIZE, headers=HEADERS, timeout=10)
        if response.status_code != 200:
            raise BenchError(f"initialize answered {response.status_code}")
    return count


def _ended_sessions(r: redis.Redis, worker: str, reason: str) -> int:
    """Sessions of `worker` the last two minutes' counters record as ended for `reason`."""
    schema = key_schema.KeySchema(PREFIX)
    minute = key_schema.minute_of(time.time())
    field_name = key_schema.f_ended(worker, reason)
    return sum(int(r.hget(schema.minute(m), field_name) or 0) for m in (minute - 1, minute))


# --- floods ----------------------------------------------------------------------------------------
@dataclass
class FloodRow:
    run: str
    result: FloodResult
    rss_before: int
    rss_after: int
    gets: int
    looked_up: int
    skipped: dict[str, int]


def run_floods(settings: Settings, progress: Progress) -> list[FloodRow]:
    """One fresh worker: plain calls on own sessions, then a flood of distinct made-up ids."""
    rows = []
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(embedded=False))
        deployment = Deployment.start(stack, redis_server, 1)
        url, pid = deployment.cluster.urls[0], deployment.cluster.pids[0]
        anyio.run(_bounded_flood, url, 2_000, None)  # warm-up
        reasons = ("rate_limited", "queue_full", "backlog_full")
        with deployment.redis_client() as r:
            for run, ids, count in (
                ("plain calls on 8 own sessions", None, settings.plain),
                ("distinct made-up ids", distinct_ids(f"flood-{time.time_ns()}"), settings.flood),
            ):
                progress(f"flood: {count} {run}")
                rss_before, gets_before = rss_bytes(pid), _gets(r)
                dropped = {k: deployment.metric(DROPPED, mcp_registry_drop_reason=k) for k in reasons}
                fabricated = deployment.metric(LOOKUPS, mcp_registry_session_status="fabricated")
                result = anyio.run(_bounded_flood, url, count, ids)
                time.sleep(1.0)  # the last lookups' grace period, and a refresh
                rows.append(FloodRow(
                    run, result, rss_before, rss_bytes(pid), _gets(r) - gets_before,
                    int(deployment.metric(LOOKUPS, mcp_registry_session_status="fabricated") - fabricated),
                    {k: int(deployment.metric(DROPPED, mcp_registry_drop_reason=k) - v) for k, v in dropped.items()},
                ))  # fmt: skip
    return rows


async def _bounded_flood(url: str, total: int, ids: Callable[[int], str] | None) -> FloodResult:
    with anyio.fail_after(600):
        return await flood(url, total, ids)


def _gets(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


# --- the report ----------------------------------------------------------------------------------
def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def _median_range(values: list[float], fmt: str) -> str:
    """`median (min–max)`, or the value alone for one run."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def report(rows: list[Row], floods: list[FloodRow], settings: Settings, command: str) -> str:
    lines = [
        f"Measured by `{command}`: {settings.reps} runs of each scenario, {settings.seconds} s windows, wrk with "
        f"{settings.connections} connections. Latency and recovery: median (min–max) of the runs; counts: "
        "summed over the runs' fault windows. The no-fault p99 of a run is the better of its two no-fault "
        "windows (before the fault and after the recovery).",
        "",
        *[f"- {item}" for item in machine()],
        "",
        "| fault | requests | failed | p99 no fault ms | p99 during ms | p99 ratio | p50 ratio "
        "| slowest churn request ms | events dropped | stale ids unverified | recovery s "
        "| warnings logged (unavailable/back per worker) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        runs = row.runs
        lines.append(
            f"| {row.scenario} | {sum(r.during.requests for r in runs)} | {sum(r.during.failures for r in runs)} | "
            f"{_median_range([r.baseline_p99_us / 1000 for r in runs], '.1f')} | "
            f"{_median_range([r.during.wrk.p99_us / 1000 for r in runs], '.1f')} | "
            f"{_median_range([r.ratio for r in runs], '.2f')} | {_median_range([r.p50_ratio for r in runs], '.2f')} | "
            f"{max(r.during.churn.slowest for r in runs) * 1000:.0f} | {sum(r.during.dropped for r in runs):.0f} | "
            f"{sum(r.during.unverified for r in runs):.0f} | {_median_range([r.recovery for r in runs], '.1f')} | "
            f"{runs[-1].warnings} |"
        )
    notes = [f"- {row.scenario}: {row.note}" for row in rows if row.note]
    for row in rows:
        if row.runs[0].stopped is not None:
            stopped = max(r.stopped or 0.0 for r in row.runs)
            notes.append(f"- {row.scenario}: it held {HELD_BY_STOPPED_WORKER} sessions; it stopped within "
                         f"{stopped:.2f}s; recorded as ended: {', '.join(r.ended for r in row.runs)}")  # fmt: skip
    failures = [f"- {row.scenario}: {', '.join(r.during.churn.examples)}" for row in rows for r in row.runs
                if r.during.churn.examples]  # fmt: skip
    lines += ["", *notes]
    if failures:
        lines += ["", "Failed requests (first few):", *failures]
    lines += [
        "",
        "| flood (one worker) | requests | wall s | req/s | answers | RSS before → after MiB | Redis GETs "
        "| ids looked up | skipped and counted |",
        "|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for f in floods:
        answers = ", ".join(f"{n} × {status}" for status, n in sorted(f.result.statuses.items()))
        skipped = ", ".join(f"{n} `{reason}`" for reason, n in f.skipped.items() if n) or "–"
        lines.append(
            f"| {f.run} | {f.result.requests} | {f.result.seconds:.1f} | {f.result.rate:.0f} | {answers} | "
            f"{f.rss_before / 2**20:.1f} → {f.rss_after / 2**20:.1f} | {f.gets} | {f.looked_up} | {skipped} |"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------
def run_all(settings: Settings, progress: Progress) -> list[Row]:
    """Every scenario `settings.reps` times; the Redis faults take turns within each repetition."""
    absent = Row("Redis absent when the workers start, started after the window",
                 note="its no-fault window is measured after the recovery, in the same processes")  # fmt: skip
    faults = [Row(fault.name) for fault in FAULTS]
    stopped = [Row(f"a worker stopped with {how} (p99 on a surviving worker)") for how in ("SIGTERM", "SIGKILL")]
    for rep in range(settings.reps):
        progress(f"run {rep + 1} of {settings.reps}")
        absent.runs.append(absent_once(settings, progress))
        with contextlib.ExitStack() as stack:
            redis_server = stack.enter_context(RedisServer(embedded=False))
            deployment = Deployment.start(stack, redis_server, 2)
            warm_up(deployment, settings.connections)
            for row, fault in zip(faults, FAULTS, strict=True):
                row.runs.append(redis_fault_once(deployment, fault, settings, progress))
        for row, run in zip(stopped, worker_faults_once(settings, progress), strict=True):
            row.runs.append(run)
    return [absent, *faults, *stopped]


@dataclass(frozen=True)
class Settings:
    seconds: int
    connections: int
    reps: int
    flood: int
    plain: int
    quiet_cores: float


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured window")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (one thread each)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each scenario")
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="before each pair of windows, wait until other processes use less than this",
    )
    parser.add_argument("--flood", type=int, default=100_000, help="made-up ids in the flood")
    parser.add_argument("--plain", type=int, default=20_000, help="plain calls to compare the flood with")
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write the tables")
    args = parser.parse_args(argv)
    settings = Settings(
        seconds=args.seconds,
        connections=args.connections,
        reps=args.reps,
        flood=args.flood,
        plain=args.plain,
        quiet_cores=args.quiet_cores,
    )
    command = shlex.join(["python", "-m", "bench.faults", *(argv if argv is not None else sys.argv[1:])])
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    try:
        require_binary("wrk")
        require_binary("redis-server")
        rows = run_all(settings, progress)
        floods = run_floods(settings, progress)
    except BenchError as exc:
        print(f"bench.faults: {exc}", file=sys.stderr)
        return 1
    write_section(args.report, "faults", report(rows, floods, settings, command))
    progress(f"done; tables written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def __getattr__(name: str) -> object:
    """`bench.faults:app`, the app the benchmark's workers serve: the demo app (tools, `/healthz`,
    the middleware configured from the environment) with `gc.collect(); gc.freeze()` after start-up,
    as in bench/apps.py, so that full GC passes over the start-up heap do not set every p99."""
    if name == "app":
        from bench.apps import FreezeHeapAfterStartup
        from mcp_registry.demo.app import build_app

        built = FreezeHeapAfterStartup(build_app())
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
