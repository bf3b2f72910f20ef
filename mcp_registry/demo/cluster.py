"""N real uvicorn worker processes of an ASGI app, each on its own 127.0.0.1 port.

Each worker is a separate `python -m uvicorn` process in its own process group (not
`uvicorn --workers`, whose processes share one port: we need to address each worker and to
put a balancer of our own in front). Worker `i` is named `worker-<i>` (or `<name>-<i>`) through
`MCP_SESSION_REGISTRY_WORKER_ID`::

    with WorkerCluster(2, env={"MCP_SESSION_REGISTRY": "1", ...}) as cluster:
        cluster.urls        # ["http://127.0.0.1:<p0>", "http://127.0.0.1:<p1>"]
        cluster.kill(1)     # SIGKILL worker-1, as a crash would

Leaving the block stops every worker: SIGTERM (uvicorn runs the lifespan shutdown, so the
registry drains), then SIGKILL after a bound. Nothing outlives the cluster, even when it is
left by an exception or a Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Self

import httpx

from mcp_registry.demo import _process
from mcp_registry.env import ENV_WORKER_ID

DEMO_APP: Final = "mcp_registry.demo:app"
HEALTH_PATH: Final = "/healthz"
"""Where the demo app answers 200 once started; `health_path=` names another app's."""


class WorkerCluster(_process.StartStop):
    """Start `workers` uvicorn processes serving `app` (an import string).

    Each worker's environment is ours, plus `env`, plus `worker_env(i)` (settings that must
    differ per worker, such as a metrics port), plus its worker id. A worker is ready when
    uvicorn logs that it listens (keep `uvicorn_args` at log level `info` or lower) and its
    `health_path` answers 200.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        env: Mapping[str, str] | None = None,
        worker_env: Callable[[int], Mapping[str, str]] | None = None,
        app: str = DEMO_APP,
        health_path: str = HEALTH_PATH,
        uvicorn_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        name: str = "worker",
    ) -> None:
        if workers < 1:
            raise ValueError("a cluster needs at least one worker")
        self.app = app
        self.env = dict(env or {})
        self._worker_env = worker_env
        self.health_path = health_path
        self.worker_ids = [f"{name}-{i}" for i in range(workers)]
        self.ports: list[int] = []
        self._uvicorn_args = list(uvicorn_args)
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        """Base URL of each worker, in worker order."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def log_path(self, index: int) -> Path:
        if self._dir is None:
            raise RuntimeError("the cluster has not been started")
        return Path(self._dir.name) / f"{self.worker_ids[index]}.log"

    def log(self, index: int) -> str:
        """What worker `index` has printed so far (uvicorn's log and any traceback)."""
        return self.log_path(index).read_text(errors="replace")

    def running(self, index: int) -> bool:
        return self._procs[index].poll() is None

    def start(self) -> Self:
        """Start every worker and wait (bounded) until each answers its health path."""
        if self._procs:
            raise RuntimeError("the cluster is already started")
        self._dir = tempfile.TemporaryDirectory(prefix="mcp-registry-cluster-")
        self.ports = _process.free_ports(len(self.worker_ids))
        try:
            for index in range(len(self.worker_ids)):
                self._procs.append(self._spawn(index))
            for index, proc in enumerate(self._procs):
                _process.wait_ready(
                    proc,
                    _serving(self.log_path(index), self.ports[index], self.urls[index] + self.health_path),
                    timeout=self._startup_timeout,
                    what=f"{self.worker_ids[index]} ({self.app})",
                    log_path=self.log_path(index),
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[int]:
        """Stop every worker gracefully (bounded, then SIGKILL); return their exit codes. Idempotent."""
        codes: list[int] = []
        try:
            for proc in self._procs:
                _process.signal_group(proc, signal.SIGTERM)
            codes = [_process.terminate(proc, timeout=self._stop_timeout) for proc in self._procs]
        finally:
            for proc in self._procs:  # interrupted while waiting: nothing may survive
                if proc.returncode is None:
                    _process.kill(proc)
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None
        return codes

    def kill(self, index: int) -> None:
        """SIGKILL worker `index`, as a crash or an OOM kill would (no lifespan shutdown)."""
        _process.kill(self._procs[index])

    def terminate(self, index: int) -> int:
        """Stop worker `index` gracefully (lifespan shutdown runs); return its exit code."""
        return _process.terminate(self._procs[index], timeout=self._stop_timeout)

    def restart(self, index: int) -> None:
        """A deploy of worker `index`: SIGTERM (it drains), then the new process on the same port, ready."""
        self.terminate(index)
        self._procs[index] = proc = self._spawn(index)
        ready = _serving(self.log_path(index), self.ports[index], self.urls[index] + self.health_path)
        _process.wait_ready(proc, ready, timeout=self._startup_timeout, log_path=self.log_path(index),
                            what=f"{self.worker_ids[index]} ({self.app}), restarted")  # fmt: skip

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        own = self._worker_env(index) if self._worker_env is not None else {}
        env = {**os.environ, **self.env, **own, ENV_WORKER_ID: self.worker_ids[index]}
        args = [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1", "--port", str(self.ports[index]),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--timeout-graceful-shutdown", str(max(1, int(self._stop_timeout / 2))),
            *self._uvicorn_args,
        ]  # fmt: skip
        return _process.spawn(args, env=env, log_path=self.log_path(index))


def _serving(log_path: Path, port: int, health_url: str) -> _process.Probe:
    def probe() -> bool:
        if not _process.uvicorn_bound(log_path, port):
            return False
        try:
            return httpx.get(health_url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
