"""Part one: the bare SDK, the middleware with the registry off, and with it on, side by side.

For every group of scenarios that share a server (same worker count, same stateful/stateless
app) the three variants run at once on their own ports; the measured windows interleave them
(A B C, B C A, C A B, ...) so that drift of the machine falls on all three alike. Each window
records wrk's throughput and latency, the workers' CPU time, the Redis commands executed and
how busy the whole machine was. A final phase measures worker RSS after many sessions.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from bench.load import SCENARIO_MODES, WrkResult, run_wrk
from bench.procs import BenchError, RedisServer, Uvicorn, cpu_seconds, machine_busy_seconds, wait_for_quiet

INITIALIZE: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench-rss","version":"1.0"}}}'
)
HEADERS: Final = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    label: str
    wrapped: bool
    registry: bool
    continuity: str = ""
    """`MCP_SESSION_CONTINUITY` (empty: off)."""
    passthrough: bool = False


BARE: Final = Variant("bare", "bare SDK", wrapped=False, registry=False)
OFF: Final = Variant("off", "registry off", wrapped=True, registry=False)
ON: Final = Variant("on", "registry on", wrapped=True, registry=True)
CONTINUITY: Final = Variant("continuity", "continuity on", wrapped=True, registry=False, continuity="forward")
"""Registry off, `MCP_SESSION_CONTINUITY=forward`: own-session traffic must not notice it."""
ADOPT: Final = Variant("adopt", "takeover on (registry on)", wrapped=True, registry=True, continuity="adopt")
"""Registry on, `MCP_SESSION_CONTINUITY=adopt`: compared with `ON` (the same registry, continuity off)."""
PASSTHROUGH: Final = Variant("passthrough", "pass-through middleware (floor)", wrapped=False, registry=False,
                             passthrough=True)
"""The bare app behind a middleware that only awaits it: what any ASGI middleware costs."""
CONTROL: Final = Variant("control", "bare SDK again (A/A control)", wrapped=False, registry=False)
"""A second, identical bare server: its ratio to the first shows what noise alone does in this run."""
VARIANTS: Final = (BARE, OFF, ON, CONTINUITY, ADOPT)
CONTROLS: Final = (PASSTHROUGH, CONTROL)
HASH_KEY: Final = "RNKLeWGB8_PRibN8m2uk8L0tzWRMKFT_fC4joseOuuI"


@dataclass(frozen=True, slots=True)
class Scenario:
    mode: str
    """`stateful`, `stateless` or `modern` (see bench/wrk/mcp.lua)."""
    workers: int

    @property
    def stateless_app(self) -> bool:
        return self.mode == "stateless"

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.workers}"

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """`MODE@WORKERS`, e.g. `stateful@2`; the worker count defaults to 1."""
        mode, _, workers = text.strip().partition("@")
        if mode not in SCENARIO_MODES or not (workers or "1").isdigit() or int(workers or "1") < 1:
            raise ValueError(f"a scenario is MODE@WORKERS with MODE one of {', '.join(SCENARIO_MODES)}; got {text!r}")
        return cls(mode, int(workers or "1"))


@dataclass(frozen=True, slots=True)
class Settings:
    scenarios: tuple[Scenario, ...]
    seconds: int
    warmup_seconds: int
    reps: int
    connections: int
    rss_sessions: int
    refresh_seconds: float
    gc_freeze: bool
    workdir: Path
    tracer: bool = True
    """Install an OpenTelemetry SDK TracerProvider (no processor) in every app, as a traced application has."""
    quiet_cores: float = 0.25
    """A window during which other processes used more cores than this is measured again."""
    quiet_wait: float = 10.0
    """Seconds to wait for the machine to be quiet before each group of A/B/C windows."""
    retries: int = 3
    """How many A/B/C groups may be measured again in the whole run (a bound on the time)."""
    control: bool = True
    """Also run the A/A control (`CONTROL`) in every group."""

    @property
    def variants(self) -> tuple[Variant, ...]:
        return (*VARIANTS, *CONTROLS) if self.control else VARIANTS


@dataclass(frozen=True, slots=True)
class Window:
    scenario: Scenario
    variant: Variant
    rep: int
    wrk: WrkResult
    server_cpu_seconds: float
    redis_commands: dict[str, int]
    """Commands Redis executed during the window, by command."""
    foreign_cores: float
    """Cores busy with processes other than ours (other users of the machine) during the window."""


@dataclass(frozen=True, slots=True)
class RssResult:
    variant: Variant
    before: int
    after: int
    sessions: int
    """Sessions the server accepted."""
    recorded: int | None
    """Session keys the registry wrote to Redis (registry on only)."""


@dataclass
class SideBySide:
    settings: Settings
    windows: list[Window] = field(default_factory=list)
    rss: dict[tuple[Scenario, str], int] = field(default_factory=dict)
    rss_after_sessions: list[RssResult] = field(default_factory=list)
    cpus: tuple[list[int] | None, list[int] | None] = (None, None)
    discarded: list[Window] = field(default_factory=list)
    """Windows measured again because the machine was busy with other work."""


def cpu_plan(workers: int) -> tuple[list[int] | None, list[int] | None]:
    """(server CPUs, load-generator CPUs): apart when the machine has a core to spare, else shared."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < workers + 1:
        return None, None
    return cpus[:workers], cpus[workers:]


def _groups(scenarios: Iterable[Scenario]) -> dict[tuple[int, bool], list[Scenario]]:
    groups: dict[tuple[int, bool], list[Scenario]] = {}
    for scenario in scenarios:
        groups.setdefault((scenario.workers, scenario.stateless_app), []).append(scenario)
    return groups


def _server(variant: Variant, workers: int, *, stateless: bool, redis: RedisServer, prefix: str,
            settings: Settings, cpus: Sequence[int] | None) -> Uvicorn:
    kind = "wrapped" if variant.wrapped else "passthrough" if variant.passthrough else "bare"
    app = kind + ("_stateless" if stateless else "")
    env = {"BENCH_GC_FREEZE": "1" if settings.gc_freeze else "0", "BENCH_TRACER": "1" if settings.tracer else "0"}
    if variant.wrapped:
        env |= {
            "MCP_SESSION_REGISTRY": "1" if variant.registry else "0",
            "MCP_SESSION_REGISTRY_URL": redis.url,
            "MCP_SESSION_REGISTRY_PREFIX": prefix,
            "MCP_SESSION_REGISTRY_REFRESH_SECONDS": f"{settings.refresh_seconds:g}",
        }
    if variant.continuity:
        env |= {"MCP_SESSION_CONTINUITY": variant.continuity, "MCP_SESSION_REGISTRY_HASH_KEY": HASH_KEY}
    return Uvicorn(app, workers, env, settings.workdir, cpus)


def run(settings: Settings, redis: RedisServer, progress: Progress) -> SideBySide:
    result = SideBySide(settings)
    for (workers, stateless), scenarios in _groups(settings.scenarios).items():
        server_cpus, load_cpus = cpu_plan(workers)
        if workers == 1:
            result.cpus = (server_cpus, load_cpus)
        prefix = f"bench{workers}{'sl' if stateless else 'sf'}"
        servers = {
            v.key: _server(v, workers, stateless=stateless, redis=redis, prefix=prefix, settings=settings,
                           cpus=server_cpus).start()
            for v in settings.variants
        }
        try:
            for server in servers.values():
                server.wait_ready()
            for scenario in scenarios:
                progress(f"warm-up {scenario.name}")
                for server in servers.values():
                    run_wrk(server.url, scenario.mode, seconds=settings.warmup_seconds,
                            connections=settings.connections, cpus=load_cpus)
            for rep in range(settings.reps):
                shift = rep % len(settings.variants)
                order = settings.variants[shift:] + settings.variants[:shift]
                for scenario in scenarios:
                    while True:
                        wait_for_quiet(settings.quiet_cores, settings.quiet_wait)
                        group = [_measure(scenario, v, rep, servers[v.key], redis, settings, load_cpus)
                                 for v in order]
                        for window in group:
                            progress(f"{scenario.name} rep {rep + 1}/{settings.reps} {window.variant.label}: "
                                     f"{window.wrk.throughput:.0f} req/s, p99 {window.wrk.p99_us / 1000:.1f} ms, "
                                     f"others used {window.foreign_cores:.2f} cores")
                        busy = max(w.foreign_cores for w in group) > settings.quiet_cores
                        if not busy or len(result.discarded) >= len(group) * settings.retries:
                            result.windows += group
                            break
                        result.discarded += group
                        progress("  the machine was busy with other work: measuring this group again")
            for scenario in scenarios:
                for variant in settings.variants:
                    result.rss[(scenario, variant.key)] = servers[variant.key].rss_bytes()
        finally:
            for server in servers.values():
                server.stop()
    if settings.rss_sessions:
        result.rss_after_sessions = rss_after_sessions(settings, redis, progress)
    return result


def _measure(scenario: Scenario, variant: Variant, rep: int, server: Uvicorn, redis: RedisServer,
             settings: Settings, load_cpus: Sequence[int] | None) -> Window:
    assert redis.process is not None
    commands = redis.command_counts()
    busy = machine_busy_seconds()
    server_cpu = server.cpu_seconds()
    redis_cpu = cpu_seconds(redis.process.pid)
    wrk = run_wrk(server.url, scenario.mode, seconds=settings.seconds, connections=settings.connections,
                  cpus=load_cpus)
    busy = machine_busy_seconds() - busy
    server_cpu = server.cpu_seconds() - server_cpu
    redis_cpu = cpu_seconds(redis.process.pid) - redis_cpu
    foreign = max(0.0, busy - server_cpu - redis_cpu - wrk.wrk_cpu_seconds)
    return Window(
        scenario=scenario,
        variant=variant,
        rep=rep,
        wrk=wrk,
        server_cpu_seconds=server_cpu,
        redis_commands=_difference(redis.command_counts(), commands),
        foreign_cores=foreign / wrk.seconds if wrk.seconds else 0.0,
    )


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)}


# --- worker RSS after many sessions -------------------------------------------------------------
def rss_after_sessions(settings: Settings, redis: RedisServer, progress: Progress) -> list[RssResult]:
    """Fresh one-worker servers; open `rss_sessions` sessions on each; RSS before and after."""
    server_cpus, _ = cpu_plan(1)
    results: list[RssResult] = []
    for variant in VARIANTS:
        prefix = f"benchrss{variant.key}"
        server = _server(variant, 1, stateless=False, redis=redis, prefix=prefix, settings=settings,
                         cpus=server_cpus).start()
        try:
            server.wait_ready()
            before = server.rss_bytes()
            progress(f"opening {settings.rss_sessions} sessions on {variant.label}")
            opened = asyncio.run(_open_sessions(server.url, settings.rss_sessions))
            recorded = _wait_recorded(redis, prefix, opened) if variant.registry else None
            results.append(RssResult(variant, before, server.rss_bytes(), opened, recorded))
        finally:
            server.stop()
    return results


async def _open_sessions(url: str, count: int, concurrency: int = 8) -> int:
    """Send `count` initialize requests with no id; each one that succeeds opens a session."""
    next_index = 0
    opened = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, opened
        while next_index < count:
            next_index += 1
            response = await http.post(url, content=INITIALIZE, headers=HEADERS)
            if response.status_code == 200 and response.headers.get("mcp-session-id"):
                opened += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return opened


def _wait_recorded(redis: RedisServer, prefix: str, expected: int, timeout: float = 30.0) -> int:
    """Session keys under `prefix`, once the registry has written `expected` of them (or the bound passed)."""
    client = redis.client()
    deadline = time.monotonic() + timeout
    while True:
        found = sum(1 for _ in client.scan_iter(match=f"{prefix}:s:*", count=1000))
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# --- summaries ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Summary:
    """One variant of one scenario: medians over the repetitions, ratios paired per repetition."""

    scenario: Scenario
    variant: Variant
    throughput: float
    throughput_ratio: tuple[float, float, float]
    """(median, min, max) over repetitions of this variant / the bare SDK in the same repetition."""
    p50_ms: float
    p50_ratio: tuple[float, float, float]
    p99_ms: float
    p99_ratio: tuple[float, float, float]
    cpu_us: float
    cpu_ratio: tuple[float, float, float]
    redis_per_request: float | None
    redis_by_command: dict[str, int]
    """Commands Redis executed during this variant's windows, by command (registry on only)."""
    rss_mib: float
    rss_ratio: float
    errors: int
    lost: int
    wrk_core_share: float
    foreign_cores: float


def summarize(result: SideBySide) -> list[Summary]:
    summaries: list[Summary] = []
    for scenario in dict.fromkeys(w.scenario for w in result.windows):
        by_variant = {v.key: sorted((w for w in result.windows if w.scenario == scenario and w.variant == v),
                                    key=lambda w: w.rep) for v in result.settings.variants}
        bare = by_variant[BARE.key]
        for variant in result.settings.variants:
            windows = by_variant[variant.key]
            if not windows:
                continue
            requests = sum(w.wrk.requests for w in windows)

            def ratio(metric: Callable[[Window], float], runs: list[Window] = windows,
                      base: list[Window] = bare) -> tuple[float, float, float]:
                values = [metric(w) / metric(b) for w, b in zip(runs, base, strict=True) if metric(b)]
                if not values:
                    return math.nan, math.nan, math.nan
                return statistics.median(values), min(values), max(values)

            def cpu(w: Window) -> float:
                return w.server_cpu_seconds / w.wrk.requests * 1e6 if w.wrk.requests else 0.0

            rss = result.rss.get((scenario, variant.key), 0)
            rss_bare = result.rss.get((scenario, BARE.key), 0)
            summaries.append(Summary(
                scenario=scenario,
                variant=variant,
                throughput=statistics.median(w.wrk.throughput for w in windows),
                throughput_ratio=ratio(lambda w: w.wrk.throughput),
                p50_ms=statistics.median(w.wrk.p50_us for w in windows) / 1000,
                p50_ratio=ratio(lambda w: w.wrk.p50_us),
                p99_ms=statistics.median(w.wrk.p99_us for w in windows) / 1000,
                p99_ratio=ratio(lambda w: w.wrk.p99_us),
                cpu_us=statistics.median(cpu(w) for w in windows),
                cpu_ratio=ratio(cpu),
                redis_per_request=(sum(sum(w.redis_commands.values()) for w in windows) / requests
                                   if variant.registry and requests else None),
                redis_by_command=dict(sum((Counter(w.redis_commands) for w in windows), Counter())
                                      if variant.registry else {}),
                rss_mib=rss / 2**20,
                rss_ratio=rss / rss_bare if rss_bare else float("nan"),
                errors=sum(w.wrk.bad + w.wrk.socket_errors for w in windows),
                lost=sum(w.wrk.lost for w in windows),
                wrk_core_share=max(w.wrk.wrk_core_share for w in windows),
                foreign_cores=max(w.foreign_cores for w in windows),
            ))
    return summaries


def check_clean(result: SideBySide) -> None:
    """A run whose responses were not all correct measured something else: say so loudly."""
    bad = [w for w in result.windows if w.wrk.bad or w.wrk.socket_errors or not w.wrk.ok]
    if bad:
        first = bad[0]
        raise BenchError(
            f"{len(bad)} windows had failed requests, e.g. {first.scenario.name} {first.variant.label} "
            f"rep {first.rep}: ok={first.wrk.ok} bad={first.wrk.bad} socket errors={first.wrk.socket_errors}"
        )
