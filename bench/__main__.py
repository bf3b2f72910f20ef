"""`python -m bench [all|side-by-side|scale] [options]`: run the benchmark, write the tables into bench/README.md.

See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import continuity, report, scale, sidebyside
from bench.procs import BenchError, RedisServer, require_binary, set_niceness

README = Path(__file__).resolve().parent / "README.md"
DEFAULT_SCENARIOS = "stateful@1,stateless@1,modern@1,stale@1,stateful@2,stateless@2"
QUICK = {
    "seconds": 1, "warmup": 1, "reps": 1, "connections": 2, "scenarios": "stateful@1,modern@1",
    "rss_sessions": 100, "scale_sizes": "1000,5000", "per_worker": 1000, "audit_runs": 1,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("part", nargs="?", choices=("all", "side-by-side", "continuity", "scale"), default="all")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration that runs in seconds (smoke test)")
    parser.add_argument("--seconds", type=int, default=5, help="length of one measured window")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up per server and scenario, seconds")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each A/B/C window")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (one thread each)")
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help="comma-separated MODE@WORKERS, MODE in stateful, stateless, modern, stale")
    parser.add_argument("--rss-sessions", type=int, default=10_000,
                        help="sessions opened before measuring RSS (0: skip)")
    parser.add_argument("--refresh-seconds", type=float, default=10.0,
                        help="registry refresh interval of the registry-on servers")
    parser.add_argument("--quiet-cores", type=float, default=0.25,
                        help="measure an A/B/C group again when other processes used more cores than this")
    parser.add_argument("--retries", type=int, default=3, help="A/B/C groups that may be measured again")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="niceness of the servers, wrk and redis-server (default -10 as root: ahead of "
                             "whatever else the machine runs)")
    parser.add_argument("--no-control", action="store_true",
                        help="leave out the A/A control (a second bare server, measured like the others)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.collect(); gc.freeze() after start-up in every app (a tuned app; default: as users "
                             "write them)")
    parser.add_argument("--no-tracer", action="store_true",
                        help="leave out the OpenTelemetry SDK TracerProvider the apps install by default")
    parser.add_argument("--scale-sizes", default="100000,1000000", help="live sessions to simulate, comma-separated")
    parser.add_argument("--per-worker", type=int, default=10_000, help="sessions per simulated worker")
    parser.add_argument("--audit-runs", type=int, default=3, help="timed audit runs per size")
    parser.add_argument("--readme", type=Path, default=README, help="where to write the tables")
    parser.add_argument("--section", default="results",
                        help="README section (between <!-- bench:SECTION:begin/end -->) for part one's tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(arguments)
    command = shlex.join(["python", "-m", "bench", *arguments])
    set_niceness(args.nice)
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="mcp-registry-bench-") as tmp:
            workdir = Path(tmp)
            if args.part in ("all", "side-by-side"):
                _side_by_side(args, workdir, command, progress)
            if args.part in ("all", "continuity"):
                require_binary("wrk")
                hop_settings = continuity.Settings(
                    seconds=args.seconds, warmup_seconds=args.warmup, reps=args.reps,
                    connections=args.connections, workdir=workdir, gc_freeze=args.gc_freeze,
                    quiet_wait=0.0 if args.quick else 3.0,
                )
                hop_result = continuity.run(hop_settings, progress)
                report.write_section(args.readme, "continuity", report.continuity(hop_result, command))
            if args.part in ("all", "scale"):
                settings = scale.ScaleSettings(
                    sizes=tuple(int(x) for x in args.scale_sizes.split(",")),
                    per_worker=args.per_worker,
                    audit_runs=args.audit_runs,
                )
                results = scale.run(settings, workdir, progress)
                report.write_section(args.readme, "scale", report.scale(results, command))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    progress(f"done; tables written to {args.readme}")
    return 0


def _side_by_side(args: argparse.Namespace, workdir: Path, command: str, progress: sidebyside.Progress) -> None:
    require_binary("wrk")
    settings = sidebyside.Settings(
        scenarios=tuple(sidebyside.Scenario.parse(x) for x in args.scenarios.split(",")),
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        reps=args.reps,
        connections=args.connections,
        rss_sessions=args.rss_sessions,
        refresh_seconds=args.refresh_seconds,
        gc_freeze=args.gc_freeze,
        tracer=not args.no_tracer,
        workdir=workdir,
        quiet_cores=args.quiet_cores,
        quiet_wait=0.0 if args.quick else 3.0,
        retries=0 if args.quick else args.retries,
        control=not args.no_control,
    )
    _, load_cpus = sidebyside.cpu_plan(1)
    redis = RedisServer(workdir, cpus=load_cpus[-1:] if load_cpus else None).start()
    try:
        result = sidebyside.run(settings, redis, progress)
    finally:
        redis.stop()
    summaries = sidebyside.summarize(result)
    report.write_section(args.readme, args.section, report.side_by_side(result, summaries, command))
    sidebyside.check_clean(result)


if __name__ == "__main__":
    sys.exit(main())
