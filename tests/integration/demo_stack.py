"""The real demo, exporting Prometheus metrics from every worker process, for the dashboard tests.

`ScrapedDemo` starts a real `redis-server`, two workers of the demo app (continuity on) behind the
demo's non-sticky balancer, and a third, degraded worker whose Redis is unreachable and whose queue
holds one event (so Redis errors and dropped events are real too, not only the happy path). Beside
them, a takeover pair (`takeover-0`, `takeover-1`, `MCP_SESSION_CONTINUITY=adopt`, its own prefix)
behind a balancer of its own: official clients hold sessions on it while `takeover-0` is deployed
(SIGTERM, then the new process), so its sessions are adopted; and one client sends, after the
deploy, on a session it had ended there: never adopted (a takeover failure, `ended`) and counted
as lost — the takeover panels have all three to show.
Each worker serves its metrics through `MCP_DEMO_PROMETHEUS_PORT`, as the docker-compose stack
would scrape them. Everything is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.to_thread
import httpx
from mcp import Client, Implementation

from mcp_registry.demo import _process
from mcp_registry.demo.balancer import Balancer
from mcp_registry.demo.cluster import HEALTH_PATH, WorkerCluster
from mcp_registry.demo.redis_server import RedisServer, redis_server_on_path
from mcp_registry.demo.telemetry_setup import ENV_PROMETHEUS_PORT
from mcp_registry.demo.traffic import TrafficPlan, TrafficSummary, drive_traffic
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_HASH_KEY,
    ENV_PREFIX,
    ENV_QUEUE_SIZE,
    ENV_REDIS_TIMEOUT,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_RETENTION_SECONDS,
    ENV_URL,
    ENV_WORKER_ID,
)
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.conftest import require

JOB: Final = "mcp-registry-demo"
"""The scrape job, as `service.name` becomes `job` in the docker-compose stack."""
PREFIX: Final = "mcpreg"
DEGRADED_WORKER: Final = "degraded-0"
WORKERS: Final = 2
PLAN: Final = TrafficPlan(legacy_clients=3, raw_clients=1, modern_clients=1)
DEGRADED_PLAN: Final = TrafficPlan(legacy_clients=2, raw_clients=0, modern_clients=0)
TAKEOVER_PREFIX: Final = "takeover"
TAKEOVER_CLIENTS: Final = 3
AFTER_DEPLOY_SECONDS: Final = 3.0
"""Traffic on the takeover pair after the deploy: a few scrapes see the adoptions and the lost session."""


class ScrapedDemo:
    """Redis, two balanced workers and one degraded worker, each with a Prometheus endpoint."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.metrics_ports: list[int] = []
        self.redis_url = ""
        self.balancer_url = ""
        self.degraded_url = ""
        self.takeover: WorkerCluster | None = None
        self.takeover_url = ""

    @property
    def targets(self) -> list[str]:
        """`host:port` of every worker's metrics endpoint (what Prometheus scrapes)."""
        return [f"127.0.0.1:{port}" for port in self.metrics_ports]

    def __enter__(self) -> Self:
        require(redis_server_on_path() is not None, "redis-server (on PATH)")
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        redis = self._stack.enter_context(RedisServer(embedded=False))
        self.redis_url = redis.url
        self.metrics_ports = _process.free_ports(WORKERS + 1 + WORKERS)
        dead_redis_port = _process.free_ports(1)[0]
        common = {
            # Continuity on, as in the compose stack: the continuity panels have hops to show.
            ENV_CONTINUITY: "forward",
            ENV_HASH_KEY: "PaetgBdiZJ9ivOyqdrfSWd4oRlBrwtzldBqL7Crq0bc",
            ENV_REGISTRY: "1",
            ENV_PREFIX: PREFIX,
            ENV_REFRESH_SECONDS: "0.5",
            ENV_RETENTION_SECONDS: "3600",
            "OTEL_SERVICE_NAME": JOB,
            # Metrics go to Prometheus only, whatever the caller's environment says about OTLP.
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
        }
        # Both workers get the same list of ports: each takes the first one still free.
        balanced_ports = ",".join(str(port) for port in self.metrics_ports[:WORKERS])
        cluster = self._stack.enter_context(
            WorkerCluster(WORKERS, env={**common, ENV_URL: redis.url, ENV_PROMETHEUS_PORT: balanced_ports})
        )
        self.balancer_url = self._stack.enter_context(Balancer(cluster.urls)).url
        takeover_ports = ",".join(str(port) for port in self.metrics_ports[WORKERS + 1 :])
        self.takeover = self._stack.enter_context(WorkerCluster(WORKERS, name="takeover", env={
            **common, ENV_CONTINUITY: "adopt", ENV_URL: redis.url, ENV_PREFIX: TAKEOVER_PREFIX,
            ENV_REFRESH_SECONDS: "1", ENV_PROMETHEUS_PORT: takeover_ports,
        }))  # fmt: skip
        self.takeover_url = self._stack.enter_context(Balancer(self.takeover.urls)).url
        self.degraded_url = self._start_degraded_worker(
            {
                **common,
                ENV_URL: f"redis://127.0.0.1:{dead_redis_port}/0",
                ENV_QUEUE_SIZE: "1",
                ENV_REDIS_TIMEOUT: "0.2",
                ENV_WORKER_ID: DEGRADED_WORKER,
                ENV_PROMETHEUS_PORT: str(self.metrics_ports[WORKERS]),
            }
        )

    def _start_degraded_worker(self, env: dict[str, str]) -> str:
        """One more uvicorn worker of the demo app (not behind the balancer), stopped on exit."""
        port = _process.free_ports(1)[0]
        log_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-registry-degraded-")))
        log_path = log_dir / "worker.log"
        args = [sys.executable, "-m", "uvicorn", "mcp_registry.demo:app", "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log"]  # fmt: skip
        proc = _process.spawn(args, env={**os.environ, **env}, log_path=log_path)
        self._stack.callback(_process.terminate, proc, timeout=10.0)
        url = f"http://127.0.0.1:{port}"
        _process.wait_ready(proc, _answers(url + HEALTH_PATH), timeout=30.0, what="the degraded worker",
                            log_path=log_path)  # fmt: skip
        return url

    def drive(self, duration: float) -> TrafficSummary:
        """Demo traffic through the balancer for `duration` seconds; a little on the degraded worker too."""
        summary = TrafficSummary()

        async def all_of_it() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: drive_traffic(self.balancer_url, duration=duration, plan=PLAN, summary=summary))
                tg.start_soon(lambda: drive_traffic(self.degraded_url, duration=duration, plan=DEGRADED_PLAN))
                tg.start_soon(self._deploy_under_sessions, duration)

        anyio.run(all_of_it)
        return summary

    async def _deploy_under_sessions(self, duration: float) -> None:
        """Sessions held on the takeover pair while `takeover-0` is deployed halfway; one session lost."""
        assert self.takeover is not None
        cluster = self.takeover
        url = f"{self.takeover_url}/mcp"
        stop = anyio.Event()

        async def hold(n: int) -> None:
            info = Implementation(name=f"held-{n}", version="1.0")
            async with Client(url, mode="legacy", client_info=info, read_timeout_seconds=10) as client:
                while not stop.is_set():
                    await client.call_tool("whoami", {})
                    await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg, httpx.AsyncClient(timeout=10) as http:
            for n in range(TAKEOVER_CLIENTS):
                tg.start_soon(hold, n)
            ended = await _open_and_end(http, f"{cluster.urls[0]}/mcp")
            await anyio.sleep(duration / 2)
            await anyio.to_thread.run_sync(cluster.restart, 0)
            # The client sends on the session it ended, to the other worker: never adopted, a session lost.
            again = await http.post(f"{cluster.urls[1]}/mcp", json=tool_call("whoami", {}),
                                    headers=session_headers(ended))  # fmt: skip
            assert again.status_code == 404, again.text
            await anyio.sleep(AFTER_DEPLOY_SECONDS)  # the sessions go on on their adopter, and are scraped there
            stop.set()

    def scrape(self) -> dict[str, str]:
        """The Prometheus text exposition of every worker right now, by target."""
        return {target: httpx.get(f"http://{target}/metrics", timeout=5.0).text for target in self.targets}


async def _open_and_end(http: httpx.AsyncClient, url: str) -> str:
    """A session opened at `url` and ended by its client (DELETE); its id."""
    opened = await http.post(url, json=initialize_request("forgetful-client", "1.0"), headers=session_headers(None))
    session_id = opened.headers["mcp-session-id"]
    assert (await http.delete(url, headers=session_headers(session_id))).status_code == 200
    return session_id


def _answers(url: str) -> _process.Probe:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
