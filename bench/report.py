"""Markdown for bench/README.md: the machine, the command, the tables and the targets."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

from bench import continuity as hops
from bench.procs import REPO_ROOT, niceness
from bench.scale import ScaleResult
from bench.sidebyside import ADOPT, BARE, CONTINUITY, CONTROL, OFF, ON, PASSTHROUGH, SideBySide, Summary

PACKAGES: Final = ("mcp", "mcp-session-continuity", "uvicorn", "uvloop", "httptools", "starlette", "anyio", "redis")
MODE_LABELS: Final = {
    "stateful": "stateful legacy `tools/call` on the connection's own session",
    "stateless": "stateless legacy `tools/call`",
    "modern": "2026-07-28 `tools/call` (no session)",
    "stale": "legacy `tools/call` with a stale id (a hop): 404",
}
TARGET_THROUGHPUT: Final = 0.99
"""Wrapped (registry off, on, continuity on) vs the bare SDK, own sessions."""
TARGET_P99: Final = 1.05
TARGET_CPU: Final = 1.01
TARGET_CONTINUITY_VS_OFF: Final = 0.99
TARGET_ADOPT_VS_OFF: Final = 0.99
"""Own-session requests with takeover on vs continuity off (the registry on in both)."""
TARGET_HOP_CPU: Final = 1.5
"""CPU of a hopped request (forwarder + owner) vs the same request sent to its owner."""
TARGET_HOP_P50_MS: Final = 1.0
TARGET_REDIS_PER_REQUEST: Final = 0.01
TARGET_RSS: Final = 1.05
TARGET_BYTES_PER_SESSION: Final = 200
TARGET_AUDIT_GROWTH: Final = 1.2


def _output(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False, cwd=REPO_ROOT)
    except OSError:
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def machine() -> list[str]:
    """What the numbers were measured on, one Markdown list item each."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/README.md"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit {commit}"
        + (" (with local changes)" if dirty not in ("", "?") else ""),
        f"machine: `nproc` = {os.cpu_count()}, {cpu}, Linux {platform.release()}, load average at start {load}",
        f"Python {platform.python_version()}; {', '.join(versions)}",
        f"{_output(['redis-server', '--version'])}; {_output(['wrk', '-v'])}",
    ]


def _ratio(value: tuple[float, float, float], reps: int) -> str:
    median, low, high = value
    if math.isnan(median):
        return "—"
    if reps > 1 and (low, high) != (median, median):
        return f"{median:.2f} ({low:.2f}–{high:.2f})"
    return f"{median:.2f}"


def _scenario(summary: Summary) -> str:
    workers = summary.scenario.workers
    return f"{MODE_LABELS.get(summary.scenario.mode, summary.scenario.mode)}, {workers} worker{'s' * (workers > 1)}"


def side_by_side(result: SideBySide, summaries: list[Summary], command: str) -> str:
    s = result.settings
    reps = s.reps
    server_cpus, load_cpus = result.cpus
    pinning = (
        f"one worker: server on CPU {server_cpus}, wrk and redis-server on CPU {load_cpus}; "
        "two workers: not pinned (the workers need both cores, wrk shares them)"
        if server_cpus else "not pinned (no core to spare)"
    )
    lines = [
        "Command: `" + command + "`",
        "",
        *(f"- {item}" for item in machine()),
        f"- windows of {s.seconds:g} s after a {s.warmup_seconds:g} s warm-up per server, {reps} repetitions "
        f"interleaved (each repetition starts one variant later); wrk with {s.connections} connections, "
        "one per thread; "
        f"CPU pinning: {pinning}; servers, wrk and redis-server run at niceness {niceness()}",
        f"- every app: SDK logging at WARNING; garbage collector {_gc_text(s.gc_freeze)}; "
        f"{'an OpenTelemetry SDK `TracerProvider` with no processor' if s.tracer else 'the no-op OpenTelemetry API'}; "
        f"registry on: redis-server on loopback, refresh every {s.refresh_seconds:g} s (the default is 60 s: "
        "this is the pessimistic side); continuity on: `MCP_SESSION_CONTINUITY=forward`, registry off",
        f"- wrk used at most {max(x.wrk_core_share for x in summaries):.0%} of one core; other processes on "
        f"the machine used up to {max(x.foreign_cores for x in summaries):.2f} cores during a kept window "
        f"(a group of A/B/C windows is measured again when they use more than {s.quiet_cores:g} cores: "
        f"{len(result.discarded) // len(s.variants)} group(s) were)",
        "",
        "Ratios are this variant / the bare SDK in the same repetition: the median, and (min–max) over "
        "the repetitions. CPU is the workers' user+system time per request (`/proc/<pid>/stat`); Redis "
        "commands per request come from `INFO commandstats` around the registry-on windows; RSS is one "
        "worker's after the scenario's runs.",
        "",
        "| scenario | variant | req/s | ×bare | p50 ms | ×bare | p99 ms | ×bare | CPU µs/req | ×bare "
        "| Redis cmd/req | RSS MiB | ×bare | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in summaries:
        redis = "—" if x.redis_per_request is None else f"{x.redis_per_request:.4f}"
        lines.append(
            f"| {_scenario(x)} | {x.variant.label} | {x.throughput:,.0f} | {_ratio(x.throughput_ratio, reps)} "
            f"| {x.p50_ms:.2f} | {_ratio(x.p50_ratio, reps)} | {x.p99_ms:.2f} | {_ratio(x.p99_ratio, reps)} "
            f"| {x.cpu_us:.0f} | {_ratio(x.cpu_ratio, reps)} | {redis} | {x.rss_mib:.1f} | {x.rss_ratio:.2f} "
            f"| {x.errors + x.lost} |"
        )
    breakdown = [x for x in summaries if x.redis_by_command]
    if breakdown:
        lines += ["", "Redis commands the registry-on server sent during its windows, by command:", ""]
        for x in breakdown:
            counts = sorted(x.redis_by_command.items(), key=lambda item: (-item[1], item[0]))
            lines.append(f"- {x.scenario.name}: " + ", ".join(f"`{name.upper()}` {n}" for name, n in counts))
    if result.rss_after_sessions:
        bare = next((r for r in result.rss_after_sessions if r.variant == BARE), None)
        lines += [
            "",
            f"Worker RSS after opening sessions (fresh one-worker servers, `initialize` × "
            f"{s.rss_sessions:,} over 8 connections; registry on: after the registry wrote them all):",
            "",
            "| variant | sessions open | RSS before MiB | RSS after MiB | ×bare | KiB per session | "
            "session keys in Redis |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result.rss_after_sessions:
            ratio = f"{r.after / bare.after:.3f}" if bare and bare.after else "—"
            per_session = (r.after - r.before) / r.sessions / 1024 if r.sessions else float("nan")
            recorded = "—" if r.recorded is None else f"{r.recorded:,}"
            lines.append(
                f"| {r.variant.label} | {r.sessions:,} | {r.before / 2**20:.1f} | {r.after / 2**20:.1f} | {ratio} "
                f"| {per_session:.1f} | {recorded} |"
            )
    lines += ["", *_side_by_side_targets(result, summaries)]
    return "\n".join(lines)


def continuity(result: hops.ContinuityResult, command: str) -> str:
    s = result.settings
    control_cpu = result.paired(hops.CONTROL, lambda w: w.cpu_us_per_request)
    targets: list[tuple[str, str, bool | None]] = []
    for variant, name in ((hops.HOPPED, "Unix socket"), (hops.HOPPED_TCP, "TCP")):  # on uvloop
        cpu = result.paired(variant, lambda w: w.cpu_us_per_request)
        added = result.added_p50_ms(variant)
        targets += [
            (f"CPU per request hopped over {name} (forwarder + owner) ≤ {TARGET_HOP_CPU}× one sent to its owner",
             f"{statistics.median(cpu):.3f} ({min(cpu):.2f}–{max(cpu):.2f}); A/A {statistics.median(control_cpu):.3f}",
             statistics.median(cpu) <= TARGET_HOP_CPU),
            (f"latency a hop over {name} adds at p50 ≤ {TARGET_HOP_P50_MS:g} ms ({s.connections} connections)",
             f"{statistics.median(added):.3f} ms ({min(added):.3f}–{max(added):.3f})",
             statistics.median(added) <= TARGET_HOP_P50_MS),
        ]
    added = result.added_p50_ms(hops.HOPPED_TCP_ASYNCIO)
    targets.append((
        f"latency a hop over TCP adds at p50 on the plain asyncio loop ≤ {TARGET_HOP_P50_MS:g} ms (Nagle off; "
        "it was ≈ 48 ms)",
        f"{statistics.median(added):.3f} ms ({min(added):.3f}–{max(added):.3f})",
        statistics.median(added) <= TARGET_HOP_P50_MS,
    ))
    lines = [
        "Command: `" + command + "`",
        "",
        *(f"- {item}" for item in machine()),
        f"- five one-worker servers of `bench.apps:wrapped` with `MCP_SESSION_CONTINUITY=forward` (registry "
        f"off): on uvloop, two owners (internal listener on the default Unix socket / on TCP loopback) and the "
        f"front worker; on the plain asyncio loop, a TCP owner and a front worker; "
        f"{s.connections} sessions opened on each owner, one per wrk connection; windows of {s.seconds:g} s "
        f"after a {s.warmup_seconds:g} s warm-up, {s.reps} repetitions interleaved (each starts one variant "
        f"later); garbage collector {_gc_text(s.gc_freeze)}; nothing pinned (both workers and wrk share the two "
        f"cores); niceness {niceness()}",
        "",
        "Ratios are this traffic / *pinned* in the same repetition: the median and (min–max). CPU counts every "
        "worker, so a hopped request pays for the forwarder and the owner.",
        "",
        *hops.table(result),
        "",
        *_targets_table(targets),
    ]
    return "\n".join(lines)


def _gc_text(frozen: bool) -> str:
    if frozen:
        return "frozen after start-up (`gc.collect(); gc.freeze()`, a tuned app)"
    return "as Python sets it (no `gc.freeze()`: apps as users write them)"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _side_by_side_targets(result: SideBySide, summaries: list[Summary]) -> list[str]:
    rows: list[tuple[str, str, bool | None]] = []
    stateful = [x for x in summaries if x.scenario.mode == "stateful"]

    def each(items: list[Summary], text: str) -> str:
        return "; ".join(f"{x.scenario.workers} worker{'s' * (x.scenario.workers > 1)}: {text.format(x=x)}"
                         for x in items)

    for variant in (OFF, ON, CONTINUITY):
        items = [x for x in stateful if x.variant == variant]
        if not items:
            continue
        rows.append((f"{variant.label}, stateful own sessions: throughput ≥ {TARGET_THROUGHPUT}× bare",
                     each(items, "{x.throughput_ratio[0]:.3f}"),
                     all(x.throughput_ratio[0] >= TARGET_THROUGHPUT for x in items)))
        rows.append((f"{variant.label}, stateful own sessions: p99 ≤ {TARGET_P99}× bare (median)",
                     each(items, "{x.p99_ratio[0]:.3f}"), all(x.p99_ratio[0] <= TARGET_P99 for x in items)))
        rows.append((f"{variant.label}, stateful own sessions: worker CPU per request ≤ {TARGET_CPU}× bare",
                     each(items, "{x.cpu_ratio[0]:.3f}"), all(x.cpu_ratio[0] <= TARGET_CPU for x in items)))
    on = [x for x in stateful if x.variant == ON]
    if on:
        rows.append((f"Redis commands per request (own sessions) ≤ {TARGET_REDIS_PER_REQUEST}",
                     each(on, "{x.redis_per_request:.4f}"),
                     all((x.redis_per_request or 0.0) <= TARGET_REDIS_PER_REQUEST for x in on)))
    pairs = [(c, o) for c in stateful if c.variant == CONTINUITY
             for o in stateful if o.variant == OFF and o.scenario == c.scenario]
    if pairs:
        ratios = [(c.scenario.workers, c.throughput_ratio[0] / o.throughput_ratio[0]) for c, o in pairs]
        rows.append((f"continuity on vs off, own sessions: throughput ≥ {TARGET_CONTINUITY_VS_OFF}×",
                     "; ".join(f"{w} worker{'s' * (w > 1)}: {r:.3f}" for w, r in ratios),
                     all(r >= TARGET_CONTINUITY_VS_OFF for _, r in ratios)))
    pairs = [(a, o) for a in stateful if a.variant == ADOPT
             for o in stateful if o.variant == ON and o.scenario == a.scenario]
    if pairs:
        ratios = [(a.scenario.workers, a.throughput_ratio[0] / o.throughput_ratio[0]) for a, o in pairs]
        rows.append((f"takeover (adopt) on vs continuity off, registry on in both, own sessions: throughput "
                     f"≥ {TARGET_ADOPT_VS_OFF}×", "; ".join(f"{w} worker{'s' * (w > 1)}: {r:.3f}" for w, r in ratios),
                     all(r >= TARGET_ADOPT_VS_OFF for _, r in ratios)))
    if floor := [x for x in stateful if x.variant == PASSTHROUGH]:
        rows.append(("(floor) a pass-through middleware, stateful: throughput, p99, CPU",
                     each(floor, "{x.throughput_ratio[0]:.3f} ({x.throughput_ratio[1]:.2f}–"
                                 "{x.throughput_ratio[2]:.2f}), p99 {x.p99_ratio[0]:.3f}, "
                                 "CPU {x.cpu_ratio[0]:.3f}"), None))
    if control := [x for x in stateful if x.variant == CONTROL]:
        rows.append(("(noise floor) the bare SDK against itself, stateful: throughput, p99, CPU",
                     each(control, "{x.throughput_ratio[0]:.3f} ({x.throughput_ratio[1]:.2f}–"
                                   "{x.throughput_ratio[2]:.2f}), p99 {x.p99_ratio[0]:.3f} ({x.p99_ratio[1]:.2f}–"
                                   "{x.p99_ratio[2]:.2f}), CPU {x.cpu_ratio[0]:.3f}"), None))
    bare = next((r for r in result.rss_after_sessions if r.variant == BARE), None)
    on_rss = next((r for r in result.rss_after_sessions if r.variant == ON), None)
    if bare and on_rss and bare.after:
        ratio = on_rss.after / bare.after
        rows.append((f"worker RSS, registry on, after {on_rss.sessions:,} sessions ≤ {TARGET_RSS}× bare",
                     f"{ratio:.3f}", ratio <= TARGET_RSS))
    return _targets_table(rows)


def _targets_table(rows: list[tuple[str, str, bool | None]]) -> list[str]:
    if not rows:
        return []
    return ["| target | measured (median) | verdict |", "|---|---|---|",
            *(f"| {t} | {m} | {'—' if ok is None else _verdict(ok)} |" for t, m, ok in rows)]


def scale(results: Sequence[ScaleResult], command: str) -> str:
    s = results[0].settings
    lines = [
        "Command: `" + command + "`",
        "",
        *(f"- {item}" for item in machine()),
        f"- simulated workers of at most {s.per_worker:,} sessions each"
        + (" (the SDK's `max_sessions` default)" if s.per_worker == 10_000 else "")
        + f", each a real `RegistryWriter`; audit timings are medians of {s.audit_runs} runs over `--since 1h`",
        "- the same deployment on one `redis-server` and on a Redis Cluster of 3 masters (one loopback address "
        "per node; memory summed over the masters), one after the other in this run",
        "",
        "| Redis | live sessions | workers | session keys | Redis memory Δ | bytes per session | "
        "`mcp-registry audit --json` s | audit reader alone ms | audit's `live` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for p in result.points:
            lines.append(
                f"| {result.topology} | {p.sessions:,} | {p.workers} | {p.session_keys:,} "
                f"| {p.memory_delta / 2**20:.1f} MiB | {p.bytes_per_session:.0f} | {p.audit_cli_seconds:.2f} "
                f"| {p.audit_reader_seconds * 1000:.1f} | {p.audit_live:,} |"
            )
    lines += ["", "`mcp-registry audit --help` alone (the CLI's start-up): "
              + ", ".join(f"{r.cli_floor_seconds:.2f} s ({r.topology} run)" for r in results) + "."]
    lines += ["", "| writes | " + " | ".join(r.topology for r in results) + " | × one node |",
              "|---|" + "---:|" * (len(results) + 1)]
    events = [r.event_writer.events_per_second if r.event_writer else math.nan for r in results]
    refresh = [statistics.median(r.refresh_rates) if r.refresh_rates else math.nan for r in results]
    batches = [statistics.median(r.event_writer.batches) if r.event_writer and r.event_writer.batches else math.nan
               for r in results]
    for label, values, unit in (
        ("new sessions through the writer's queue (events/s)", events, ""),
        ("refresh pass, sliding expiry of every live session (sessions/s per worker, median)", refresh, ""),
        ("median pipelined batch of new sessions (events)", batches, ""),
    ):
        ratio = values[-1] / values[0] if len(values) > 1 and values[0] else math.nan
        lines.append(f"| {label} | " + " | ".join(f"{v:,.0f}{unit}" for v in values) + f" | {ratio:.2f}× |")
    rows: list[tuple[str, str, bool | None]] = []
    for result in results:
        if result.points:
            last = result.points[-1]
            rows.append((f"{result.topology}: ≤ {TARGET_BYTES_PER_SESSION} B of Redis memory per live session",
                         f"{last.bytes_per_session:.0f} B at {last.sessions:,}",
                         last.bytes_per_session <= TARGET_BYTES_PER_SESSION))
        if len(result.points) > 1:
            first, last = result.points[0], result.points[-1]
            growth = last.audit_cli_seconds / first.audit_cli_seconds
            rows.append((f"{result.topology}: audit time flat from {first.sessions:,} to {last.sessions:,} sessions "
                         f"(≤ {TARGET_AUDIT_GROWTH}×)",
                         f"{growth:.2f}× (reader alone {first.audit_reader_seconds * 1000:.1f} → "
                         f"{last.audit_reader_seconds * 1000:.1f} ms)", growth <= TARGET_AUDIT_GROWTH))
    lines += ["", *_targets_table(rows)]
    return "\n".join(lines)


def write_section(readme: Path, name: str, content: str) -> None:
    """Replace what is between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`, keeping the rest."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = readme.read_text() if readme.exists() else ""
    block = f"{begin}\n{content}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text)
