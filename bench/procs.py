"""The processes a benchmark runs: redis-server and uvicorn, each on a free loopback port.

Every process is started in its own session (process group) and stopped by its own id;
every wait is bounded. CPU time and RSS come from `/proc/<pid>/stat` and `/proc/<pid>/status`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0


class BenchError(RuntimeError):
    """Something the benchmark needs is missing or misbehaved; the message says what."""


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (the benchmark needs it on PATH)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_niceness = 0


def set_niceness(value: int) -> None:
    """Run every process the benchmark starts at this niceness (negative: ahead of other work)."""
    global _niceness
    _niceness = value


def niceness() -> int:
    return _niceness


def pinned(command: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """`command` run under `taskset` on `cpus` (as it is when `cpus` is None), at the benchmark's niceness."""
    launch = list(command)
    if _niceness:
        launch = [require_binary("nice"), "-n", str(_niceness), *launch]
    if cpus:
        launch = [require_binary("taskset"), "-c", ",".join(map(str, cpus)), *launch]
    return launch


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE_SIZE


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent running processes since boot, or stolen by the hypervisor (/proc/stat).

    Interrupt and softirq time are left out: loopback traffic is processed there and is not
    charged to any process, so it would otherwise count as someone else's load.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, steal = values[0], values[1], values[2], values[7]
    return (user + nice + system + steal) / CLOCK_TICKS


def wait_for_quiet(threshold_cores: float, max_wait: float, sample: float = 1.0) -> None:
    """Wait, at most `max_wait` seconds, until other processes keep less than `threshold_cores` busy
    (ours are idle between windows)."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        busy = machine_busy_seconds()
        time.sleep(sample)
        if (machine_busy_seconds() - busy) / sample < threshold_cores:
            return


def _stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own group: started with start_new_session
        process.wait(timeout)


@dataclass
class RedisServer:
    """A throw-away redis-server on a free port: no persistence, loopback only."""

    workdir: Path
    cpus: Sequence[int] | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _stats_client: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            require_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes",
        ]
        log = (self.workdir / f"redis-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            pinned(command, self.cpus), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not start; see {log.name}") from None
                time.sleep(0.05)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, decode_responses=True, socket_timeout=30)

    def command_counts(self) -> dict[str, int]:
        """Calls per command Redis executed so far, except the INFO calls the benchmark itself makes.

        One connection serves every INFO, so that no connection handshake is counted either.
        """
        if self._stats_client is None:
            self._stats_client = self.client()
        stats = self._stats_client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}

    def used_memory(self) -> int:
        return int(self.client().info("memory")["used_memory"])

    def stop(self) -> None:
        if self._stats_client is not None:
            self._stats_client.close()
        if self.process is not None:
            _stop(self.process)


@dataclass
class Uvicorn:
    """`python -m uvicorn bench.apps:<app>` with uvloop (or `loop="asyncio"`) and httptools, one or more workers."""

    app: str
    workers: int
    env: Mapping[str, str]
    workdir: Path
    cpus: Sequence[int] | None = None
    loop: str = "uvloop"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"uvicorn-{self.app}-{self.port}.log"

    def start(self) -> Uvicorn:
        command = [
            sys.executable, "-m", "uvicorn", f"bench.apps:{self.app}",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--loop", self.loop, "--http", "httptools", "--no-access-log", "--log-level", "info",
        ]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
        env = {**inherited, **self.env, "PYTHONPATH": str(REPO_ROOT)}
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            pinned(command, self.cpus), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> Uvicorn:
        """Wait until every worker has completed its lifespan start-up and the port accepts."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self.log_path.read_text(errors="replace")
            if "Application startup failed" in text or self.process.poll() is not None:
                raise BenchError(f"uvicorn {self.app} failed to start:\n{text[-3000:]}")
            if text.count("Application startup complete.") >= self.workers and len(self.worker_pids()) == self.workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise BenchError(f"uvicorn {self.app} not ready after {START_TIMEOUT}s:\n{text[-3000:]}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or its spawned workers."""
        assert self.process is not None
        if self.workers == 1:
            return [self.process.pid]
        children: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            children += [int(pid) for pid in (task / "children").read_text().split()]
        return [pid for pid in children if b"spawn_main" in _cmdline(pid)]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.worker_pids())

    def rss_bytes(self) -> int:
        """RSS of one worker (the mean over workers)."""
        pids = self.worker_pids()
        return sum(rss_bytes(pid) for pid in pids) // max(1, len(pids))

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
