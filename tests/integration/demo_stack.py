"""The real demo, exporting Prometheus metrics from every worker process, for the dashboard tests.

`ScrapedDemo` starts a real `redis-server`, two workers of the demo app (continuity on) behind the
demo's non-sticky balancer, and a third, degraded worker whose Redis is unreachable and whose queue
holds one event (so Redis errors and dropped events are real too, not only the happy path).
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
import httpx

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
from tests.conftest import require

JOB: Final = "mcp-registry-demo"
"""The scrape job, as `service.name` becomes `job` in the docker-compose stack."""
PREFIX: Final = "mcpreg"
DEGRADED_WORKER: Final = "degraded-0"
WORKERS: Final = 2
PLAN: Final = TrafficPlan(legacy_clients=3, raw_clients=1, modern_clients=1)
DEGRADED_PLAN: Final = TrafficPlan(legacy_clients=2, raw_clients=0, modern_clients=0)


class ScrapedDemo:
    """Redis, two balanced workers and one degraded worker, each with a Prometheus endpoint."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.metrics_ports: list[int] = []
        self.redis_url = ""
        self.balancer_url = ""
        self.degraded_url = ""

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
        self.metrics_ports = _process.free_ports(WORKERS + 1)
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

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: drive_traffic(self.balancer_url, duration=duration, plan=PLAN, summary=summary))
                tg.start_soon(lambda: drive_traffic(self.degraded_url, duration=duration, plan=DEGRADED_PLAN))

        anyio.run(both)
        return summary

    def scrape(self) -> dict[str, str]:
        """The Prometheus text exposition of every worker right now, by target."""
        return {target: httpx.get(f"http://{target}/metrics", timeout=5.0).text for target in self.targets}


def _answers(url: str) -> _process.Probe:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
