"""Legacy sessions survive a rolling deploy (`MCP_SESSION_CONTINUITY=adopt`), with real everything.

Two hosts (`uvicorn --workers 2` on 127.0.0.2 and 127.0.0.3, the demo app) behind a real nginx doing
round robin (`deploy/nginx-rolling-deploy.conf`), one real redis-server. Three official Python clients
(`mode="legacy"`) and the TypeScript SDK client each hold one session and call a tool every 50 ms. A
rolling deploy restarts each host in turn as users do it: SIGTERM, then the new version on the same
address. Not one call may fail: the sessions of the host that goes are adopted by the other.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import pytest
from mcp import Client, Implementation

from mcp_registry.audit.run import read_report
from mcp_registry.demo.app import ENV_ALLOWED_HOSTS, ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.proxies import Nginx, nginx_on_path
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_FORWARD_LISTEN,
    ENV_HASH_KEY,
    ENV_PREFIX,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_URL,
)
from tests.conftest import require
from tests.integration.test_continuity_clients import CLIENT_DIR

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
ROLLING: Final = ROOT / "deploy" / "nginx-rolling-deploy.conf"
KEY: Final = "V7pcN2xYqR4tLk9sJ0wD3fHbZ6aGmE1uTi8oWnKeQyA"
PREFIX: Final = "deploys"
ADDRESSES: Final = ("127.0.0.2", "127.0.0.3")
PERIOD: Final = 0.05
PYTHON_CLIENTS: Final = 3


def host_env(address: str, redis_url: str) -> dict[str, str]:
    return {
        ENV_CONTINUITY: "adopt", ENV_HASH_KEY: KEY, ENV_FORWARD_LISTEN: f"{address}:0", ENV_REGISTRY: "1",
        ENV_URL: redis_url, ENV_PREFIX: PREFIX, ENV_REFRESH_SECONDS: "1", ENV_JSON_RESPONSE: "1",
        ENV_ALLOWED_HOSTS: ",".join(f"{a}:*" for a in ("127.0.0.1", *ADDRESSES)),
    }  # fmt: skip


@contextlib.contextmanager
def deployment(redis_url: str) -> Iterator[tuple[list[UvicornHost], Nginx]]:
    require(nginx_on_path() is not None, "nginx (Debian package)")
    with contextlib.ExitStack() as stack:
        hosts = [stack.enter_context(UvicornHost(a, workers=2, env=host_env(a, redis_url))) for a in ADDRESSES]
        balancer = stack.enter_context(Nginx(ROLLING, [f"{h.address}:{h.port}" for h in hosts]))
        try:
            yield hosts, balancer
        finally:
            for host in hosts:  # the ones the deploy started (stopping twice is a no-op)
                host.stop()


def rolling_deploy(hosts: list[UvicornHost], redis_url: str) -> None:
    """Each host in turn: SIGTERM (its supervisor stops its workers gracefully), then the new version."""
    for i, old in enumerate(hosts):
        old.stop()
        hosts[i] = UvicornHost(old.address, workers=2, env=host_env(old.address, redis_url), port=old.port).start()


async def python_client(url: str, n: int, stop: anyio.Event, results: list[dict[str, Any]]) -> None:
    outcome: dict[str, Any] = {"client": f"python-{n}", "ok": 0, "failed": 0, "errors": []}
    async with Client(url, mode="legacy", client_info=Implementation(name=f"py-{n}", version="1.0"),
                      read_timeout_seconds=10) as client:  # fmt: skip
        while not stop.is_set():
            try:
                await client.call_tool("add", {"a": n, "b": 1})
                outcome["ok"] += 1
            except Exception as exc:  # what the user's code would see
                outcome["failed"] += 1
                outcome["errors"].append(repr(exc)[:200])
            await anyio.sleep(PERIOD)
    results.append(outcome)


@pytest.mark.timeout(300)
def test_a_rolling_deploy_fails_no_call(redis_server: RedisServer) -> None:
    require((CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), "the TypeScript SDK client")
    with deployment(redis_server.url) as (hosts, balancer):
        url = f"{balancer.url}/mcp"
        ts = subprocess.Popen(["node", str(CLIENT_DIR / "steady.mjs"), url, "40", str(int(PERIOD * 1000))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        results: list[dict[str, Any]] = []

        async def scenario() -> None:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for n in range(PYTHON_CLIENTS):
                    tg.start_soon(python_client, url, n, stop, results)
                await anyio.sleep(2)  # the sessions open and calls flow before the deploy
                started = time.monotonic()
                await anyio.to_thread.run_sync(rolling_deploy, hosts, redis_server.url)
                results.append({"client": "deploy", "seconds": time.monotonic() - started})
                await anyio.sleep(2)  # calls on the new versions
                stop.set()

        anyio.run(scenario)
        out, err = ts.communicate(timeout=120)
        report = read_report(redis_server.url, prefix=PREFIX, since=600)

    ts_result: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"errors": [err[-500:]]}
    clients = [r for r in results if r["client"] != "deploy"]
    assert len(clients) == PYTHON_CLIENTS
    assert ts_result.get("connected"), ts_result
    failures = {r["client"]: r["errors"] for r in clients if r["failed"]} | (
        {"typescript": ts_result["errors"]} if ts_result.get("failed") else {}
    )
    assert failures == {}, failures
    assert all(r["ok"] > 50 for r in clients), clients
    assert ts_result["ok"] > 50, ts_result
    adopted = sum(n for _, n in report.takeover.adopted)
    assert adopted >= PYTHON_CLIENTS + 1, f"every session moved at least once: {report.takeover}"
