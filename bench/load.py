"""Drive load with wrk (bench/wrk/mcp.lua) and read back what it measured, checked responses included."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procs import BenchError, pinned, require_binary

SCRIPT: Final = Path(__file__).resolve().parent / "wrk" / "mcp.lua"
MODES: Final = ("stateful", "stateless", "modern", "stale", "session")
SCENARIO_MODES: Final = ("stateful", "stateless", "modern", "stale")
"""The modes a side-by-side scenario can use (`session` needs sessions opened beforehand)."""
_MARK: Final = "BENCH_RESULT "


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    ok: int
    """Calls answered as they should be: 200 with a JSON-RPC result (404 "Session not found" for `stale`)."""
    bad: int
    """Responses that were not what a client expects (wrong status, error body)."""
    opened: int
    """Sessions the stateful mode opened."""
    lost: int
    """Sessions that answered 404 and were opened again."""
    socket_errors: int
    wrk_cpu_seconds: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def wrk_core_share(self) -> float:
        """How much of one core wrk itself used: it must stay far from 1 to not be the bottleneck."""
        return self.wrk_cpu_seconds / self.seconds if self.seconds else 0.0


def run_wrk(url: str, mode: str, *, seconds: int, connections: int, cpus: Sequence[int] | None,
            session_ids: Sequence[str] = ()) -> WrkResult:
    """One bounded wrk run: `connections` connections, one per wrk thread (see mcp.lua).

    `session_ids` are the sessions of the `session` mode, one per connection.
    """
    if seconds < 1:
        raise ValueError("wrk runs for whole seconds, at least one")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    command = [
        require_binary("wrk"), "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", "5s", "-s", str(SCRIPT), url, "--", mode,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        env = {**os.environ, "BENCH_SESSION_IDS": ",".join(session_ids)}
        done = subprocess.run(
            pinned(command, cpus), capture_output=True, text=True, timeout=seconds + 30, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {seconds + 30}s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    data = json.loads(line.removeprefix(_MARK))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_us=data["p50_us"],
        p90_us=data["p90_us"],
        p99_us=data["p99_us"],
        max_us=data["max_us"],
        ok=data["ok"],
        bad=data["bad"],
        opened=data["opened"],
        lost=data["lost"],
        socket_errors=sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        wrk_cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )
