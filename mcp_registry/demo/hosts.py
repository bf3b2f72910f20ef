"""A "host": one real `uvicorn APP --workers N`, bound to its own loopback address.

Several hosts on one machine stand for several machines: `127.0.0.2`, `127.0.0.3`, … (all of
127.0.0.0/8 is loopback on Linux). Each host runs uvicorn's own multi-process supervisor, as
users deploy it, so its workers share one port and a request lands on whichever accepts it::

    with UvicornHost("127.0.0.2", workers=2, env={...}) as host:
        host.url            # "http://127.0.0.2:<port>"
        host.worker_pids()  # the worker processes (children of uvicorn's supervisor)

Leaving the block stops the host: SIGTERM to the supervisor (which stops its workers
gracefully), SIGKILL to the group after a bound.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Self

import httpx

from mcp_registry.demo import _process

DEMO_APP: Final = "mcp_registry.demo:app"
STARTED_LINE: Final = "Application startup complete."


class UvicornHost(_process.ManagedChild):
    def __init__(
        self,
        address: str,
        *,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        app: str = DEMO_APP,
        health_path: str = "/healthz",
        uvicorn_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        port: int = 0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.address = address
        self.workers = workers
        self.env = dict(env or {})
        self.app = app
        self.health_path = health_path
        self.port = port
        """0: a free port when started; a fixed one to start the next version on the same address."""
        self._fixed_port = port
        self._uvicorn_args = list(uvicorn_args)
        self.what = f"uvicorn --workers {workers} on {address}"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "uvicorn.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("the host is already started")
        self.port = self._fixed_port or _process.free_ports(1, self.address)[0]
        args = [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", self.address, "--port", str(self.port), "--workers", str(self.workers),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--timeout-graceful-shutdown", str(max(1, int(self._stop_timeout / 2))),
            *self._uvicorn_args,
        ]  # fmt: skip
        self._launch(args, env={**os.environ, **self.env}, log_path=self.log_path, ready=self._ready)
        return self

    def _ready(self) -> bool:
        if not _process.uvicorn_bound(self.log_path, self.port, self.address):
            return False
        if self.log().count(STARTED_LINE) < self.workers:
            return False
        try:
            return httpx.get(self.url + self.health_path, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_pids(self) -> list[int]:
        """The worker processes now running (uvicorn's supervisor restarts one that dies)."""
        if self._proc is None:
            return []
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []
        return [pid for pid in pids if _is_worker(pid)]

    def stop(self) -> None:
        super().stop()
        self._proc = None


def _is_worker(pid: int) -> bool:
    """A worker is a `multiprocessing` spawn child (not the resource tracker the supervisor may also start)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
