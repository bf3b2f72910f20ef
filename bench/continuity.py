"""Part three: what a hop costs, measured against the same traffic sent to the session's owner.

Five one-worker servers of the wrapped app (`bench.apps:wrapped`) with
`MCP_SESSION_CONTINUITY=forward` and one deployment key: two *owners* — one whose internal
listener is the default Unix socket (a hop between workers of one host), one listening on TCP
loopback (a hop between hosts) — and a *front* worker, all on uvloop; and a TCP owner and a front
worker on the plain asyncio loop, where a listener without `TCP_NODELAY` let Nagle's algorithm hold
every hop's answer back ≈ 40 ms. `connections` sessions are opened on each
owner; then wrk runs `tools/call` on them (one session per connection) in windows that alternate:

- **pinned** — sent to the owner: what a sticky balancer (or luck) gives;
- **hopped, Unix socket** / **hopped, TCP** — sent to the front worker, which forwards every
  request to the owner's internal listener and streams the answer back: what round robin gives
  with continuity;
- **pinned again** — the A/A control: its ratio to *pinned* is what noise alone does;
- **plain asyncio loop: pinned / hopped over TCP** — the same on the asyncio loop (ratios to its own
  pinned traffic).

Each repetition starts one variant later. Per window: throughput, p50/p99 (wrk), and the CPU
time of *all three* workers per request (`/proc/<pid>/stat`; the idle ones add next to nothing),
so a hopped request is charged for the forwarder and the owner together.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from bench.load import WrkResult, run_wrk
from bench.procs import BenchError, Uvicorn, wait_for_quiet
from bench.sidebyside import HASH_KEY, HEADERS, INITIALIZE

Progress = Callable[[str], None]
PINNED: Final = "pinned to the owner"
HOPPED: Final = "hopped over a Unix socket (same host, the default)"
HOPPED_TCP: Final = "hopped over TCP loopback (as between hosts)"
CONTROL: Final = "pinned again (A/A control)"
PINNED_ASYNCIO: Final = "plain asyncio loop: pinned to the owner"
HOPPED_TCP_ASYNCIO: Final = "plain asyncio loop: hopped over TCP loopback"
VARIANTS: Final = (PINNED, HOPPED, HOPPED_TCP, CONTROL, PINNED_ASYNCIO, HOPPED_TCP_ASYNCIO)
BASELINE: Final = {HOPPED_TCP_ASYNCIO: PINNED_ASYNCIO, PINNED_ASYNCIO: PINNED_ASYNCIO}
"""What each variant is compared with (default: *pinned*, on uvloop)."""


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: int
    warmup_seconds: int
    reps: int
    connections: int
    workdir: Path
    gc_freeze: bool = False
    quiet_cores: float = 0.25
    quiet_wait: float = 3.0


@dataclass(frozen=True, slots=True)
class Window:
    variant: str
    rep: int
    wrk: WrkResult
    cpu_seconds: float
    """The workers' CPU time during the window (all three servers)."""

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else float("nan")


@dataclass
class ContinuityResult:
    settings: Settings
    windows: list[Window] = field(default_factory=list)

    def of(self, variant: str) -> list[Window]:
        return sorted((w for w in self.windows if w.variant == variant), key=lambda w: w.rep)

    def paired(self, variant: str, metric: Callable[[Window], float]) -> list[float]:
        """`metric(variant) / metric(its baseline)`, repetition by repetition."""
        base = self.of(BASELINE.get(variant, PINNED))
        return [metric(v) / metric(p) for v, p in zip(self.of(variant), base, strict=True)]

    def added_p50_ms(self, variant: str = HOPPED) -> list[float]:
        base = self.of(BASELINE.get(variant, PINNED))
        return [(h.wrk.p50_us - p.wrk.p50_us) / 1000 for h, p in zip(self.of(variant), base, strict=True)]


def _server(settings: Settings, listen: str | None = None, loop: str = "uvloop") -> Uvicorn:
    env = {
        "MCP_SESSION_CONTINUITY": "forward",
        "MCP_SESSION_REGISTRY_HASH_KEY": HASH_KEY,
        # The front worker listens on a Unix socket and forwards to TCP owners too: say where it may.
        "MCP_SESSION_FORWARD_PEERS": f"127.0.0.1,unix:{tempfile.gettempdir()}",
        "BENCH_GC_FREEZE": "1" if settings.gc_freeze else "0",
    }
    if listen is not None:
        env["MCP_SESSION_FORWARD_LISTEN"] = listen
    return Uvicorn("wrapped", 1, env, settings.workdir, loop=loop)


async def _open(url: str, count: int) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as http:
        responses = [await http.post(url, content=INITIALIZE, headers=HEADERS) for _ in range(count)]
    ids = [r.headers.get("mcp-session-id", "") for r in responses]
    if not all(ids):
        raise BenchError("the owner did not open every session")
    return ids


def run(settings: Settings, progress: Progress) -> ContinuityResult:
    result = ContinuityResult(settings)
    owner = _server(settings).start()
    tcp_owner = _server(settings, "127.0.0.1:0").start()
    front = _server(settings).start()
    asyncio_owner = _server(settings, "127.0.0.1:0", loop="asyncio").start()
    asyncio_front = _server(settings, loop="asyncio").start()
    servers = (owner, tcp_owner, front, asyncio_owner, asyncio_front)
    try:
        for server in servers:
            server.wait_ready()
        sessions = asyncio.run(_open(owner.url, settings.connections))
        tcp_sessions = asyncio.run(_open(tcp_owner.url, settings.connections))
        asyncio_sessions = asyncio.run(_open(asyncio_owner.url, settings.connections))
        targets = {
            PINNED: (owner.url, sessions), HOPPED: (front.url, sessions),
            HOPPED_TCP: (front.url, tcp_sessions), CONTROL: (owner.url, sessions),
            PINNED_ASYNCIO: (asyncio_owner.url, asyncio_sessions),
            HOPPED_TCP_ASYNCIO: (asyncio_front.url, asyncio_sessions),
        }
        progress("warm-up continuity")
        for url, ids in targets.values():
            run_wrk(url, "session", seconds=settings.warmup_seconds, connections=settings.connections, cpus=None,
                    session_ids=ids)
        for rep in range(settings.reps):
            shift = rep % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            wait_for_quiet(settings.quiet_cores, settings.quiet_wait)
            for variant in order:
                url, ids = targets[variant]
                before = sum(server.cpu_seconds() for server in servers)
                wrk = run_wrk(url, "session", seconds=settings.seconds,
                              connections=settings.connections, cpus=None, session_ids=ids)
                window = Window(variant, rep, wrk, sum(server.cpu_seconds() for server in servers) - before)
                if wrk.bad or wrk.socket_errors:
                    raise BenchError(f"{variant}: {wrk.bad} bad answers, {wrk.socket_errors} socket errors")
                result.windows.append(window)
                progress(f"continuity rep {rep + 1}/{settings.reps} {variant}: {wrk.throughput:.0f} req/s, "
                         f"p50 {wrk.p50_us / 1000:.2f} ms, CPU {window.cpu_us_per_request:.0f} µs/req")
    finally:
        for server in servers:
            server.stop()
    return result


def _spread(values: Sequence[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(result: ContinuityResult) -> list[str]:
    lines = [
        "| traffic | req/s | ×pinned | p50 ms | p99 ms | CPU µs/req (all workers) | ×pinned |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        windows = result.of(variant)
        lines.append(
            f"| {variant} | {statistics.median(w.wrk.throughput for w in windows):,.0f} "
            f"| {_spread(result.paired(variant, lambda w: w.wrk.throughput))} "
            f"| {statistics.median(w.wrk.p50_us for w in windows) / 1000:.2f} "
            f"| {statistics.median(w.wrk.p99_us for w in windows) / 1000:.2f} "
            f"| {statistics.median(w.cpu_us_per_request for w in windows):.0f} "
            f"| {_spread(result.paired(variant, lambda w: w.cpu_us_per_request))} |"
        )
    return lines
