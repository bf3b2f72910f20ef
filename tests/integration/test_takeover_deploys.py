"""Legacy sessions survive a rolling deploy and a crash (`MCP_SESSION_CONTINUITY=adopt`), with real everything.

Two hosts (`uvicorn --workers 2` on 127.0.0.2 and 127.0.0.3, the demo app) behind a real nginx doing
round robin (`deploy/nginx-rolling-deploy.conf`), one real redis-server. Three official Python clients
(`mode="legacy"`) and the TypeScript SDK client each hold one session and call a tool every 50 ms. A
rolling deploy restarts each host in turn as users do it: SIGTERM, then the new version on the same
address. Not one call may fail: the sessions of the host that goes are adopted by the other. A host
SIGKILLed (its workers too) and restarted costs each client at most the call in flight. The rolling
deploy is also run with the registry on a 3-master Redis Cluster, and on Sentinel after the Redis
master itself failed over (the handshakes are read from the promoted replica).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import httpx
import pytest
from mcp import Client, Implementation
from mcp_types import TextContent

from mcp_registry.audit.run import read_report
from mcp_registry.demo._process import kill, terminate
from mcp_registry.demo.app import ENV_ALLOWED_HOSTS, ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.proxies import Nginx, nginx_on_path
from mcp_registry.demo.redis_cluster import LocalCluster, LocalSentinel, wait_until
from mcp_registry.demo.redis_cluster import client as redis_client
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
from mcp_registry.testing import initialize_request, session_headers
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
        # A live key lives 3 refreshes (15 s): longer than a host's graceful shutdown (7 s here, uvicorn's
        # --timeout-graceful-shutdown), so that a session is still there to adopt when its owner exits.
        ENV_URL: redis_url, ENV_PREFIX: PREFIX, ENV_REFRESH_SECONDS: "5", ENV_JSON_RESPONSE: "1",
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


def crash_and_restart(hosts: list[UvicornHost], redis_url: str) -> None:
    """The first host's process group SIGKILLed (no shutdown, no handover), then started again."""
    old = hosts[0]
    assert old._proc is not None
    kill(old._proc)
    old.stop()
    hosts[0] = UvicornHost(old.address, workers=2, env=host_env(old.address, redis_url), port=old.port).start()


def rolling_deploy(hosts: list[UvicornHost], redis_url: str) -> None:
    """Each host in turn: SIGTERM (its supervisor stops its workers gracefully), then the new version."""
    for i, old in enumerate(hosts):
        old.stop()
        hosts[i] = UvicornHost(old.address, workers=2, env=host_env(old.address, redis_url), port=old.port).start()


async def python_client(url: str, n: int, stop: anyio.Event, results: list[dict[str, Any]]) -> None:
    outcome: dict[str, Any] = {"client": f"python-{n}", "ok": 0, "failed": 0, "errors": [], "owners": []}
    async with Client(url, mode="legacy", client_info=Implementation(name=f"py-{n}", version="1.0"),
                      read_timeout_seconds=10) as client:  # fmt: skip
        while not stop.is_set():
            try:
                result = await client.call_tool("whoami", {})  # the worker whose SDK holds the session
                outcome["owners"].append(result.content[0].text if isinstance(result.content[0], TextContent) else "")
                outcome["ok"] += 1
            except Exception as exc:  # what the user's code would see
                outcome["failed"] += 1
                outcome["errors"].append(repr(exc)[:200])
            await anyio.sleep(PERIOD)
    results.append(outcome)


def drive(redis_url: str, event: Callable[[list[UvicornHost], str], None], *, adoptions: int) -> tuple[
    list[dict[str, Any]], dict[str, Any], Any
]:
    """Clients calling every 50 ms through the balancer while `event` happens to the hosts."""
    require((CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), "the TypeScript SDK client")
    with deployment(redis_url) as (hosts, balancer):
        url = f"{balancer.url}/mcp"
        ts = subprocess.Popen(["node", str(CLIENT_DIR / "steady.mjs"), url, "40", str(int(PERIOD * 1000))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        results: list[dict[str, Any]] = []

        async def scenario() -> None:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for n in range(PYTHON_CLIENTS):
                    tg.start_soon(python_client, url, n, stop, results)
                await anyio.sleep(2)  # the sessions open and calls flow first
                await anyio.to_thread.run_sync(event, hosts, redis_url)
                await anyio.sleep(2)  # calls after it
                stop.set()

        anyio.run(scenario)
        ts.terminate()  # it runs for 40 s at most: enough of it was seen
        out, err = ts.communicate(timeout=30)
        # The workers flush their counts every refresh (5 s): read until every adoption is in.
        report = wait_until(lambda: read_report(redis_url, prefix=PREFIX, since=600),
                            lambda r: sum(n for _, n in r.takeover.adopted) >= adoptions,
                            bound=15, what="the audit to count the adoptions")  # fmt: skip
    outcome: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"errors": [err[-500:]]}
    return results, outcome, report



def assert_one_owner_at_a_time(clients: list[dict[str, Any]]) -> None:
    """A session moves from owner to owner and never back: two workers holding it would answer in turn."""
    for client in clients:
        runs = [owner for owner, _ in itertools.groupby(client["owners"])]
        assert len(runs) == len(set(runs)), f"{client['client']} was served by {runs}"


def assert_no_call_failed(clients: list[dict[str, Any]], ts_result: dict[str, Any]) -> None:
    assert len(clients) == PYTHON_CLIENTS
    assert ts_result.get("connected"), ts_result
    failures = {r["client"]: r["errors"] for r in clients if r["failed"]} | (
        {"typescript": ts_result["errors"]} if ts_result.get("failed") else {}
    )
    assert failures == {}, failures
    assert all(r["ok"] > 50 for r in clients), clients
    assert ts_result["ok"] > 50, ts_result


@pytest.mark.timeout(300)
def test_a_rolling_deploy_fails_no_call(redis_server: RedisServer) -> None:
    clients, ts_result, report = drive(redis_server.url, rolling_deploy, adoptions=PYTHON_CLIENTS + 1)

    assert_no_call_failed(clients, ts_result)
    assert_one_owner_at_a_time(clients)
    adopted = sum(n for _, n in report.takeover.adopted)
    assert adopted >= PYTHON_CLIENTS + 1, f"every session moved at least once: {report.takeover}"


@pytest.mark.timeout(300)
def test_a_rolling_deploy_on_a_redis_cluster_fails_no_call(redis_server_on_path_required: None) -> None:
    """The same deploy with the registry on a 3-master Redis Cluster (the claim is one slot: `{H}`)."""
    with LocalCluster(masters=3) as cluster:
        clients, ts_result, report = drive(cluster.url, rolling_deploy, adoptions=PYTHON_CLIENTS + 1)

    assert_no_call_failed(clients, ts_result)
    assert_one_owner_at_a_time(clients)
    assert sum(n for _, n in report.takeover.adopted) >= PYTHON_CLIENTS + 1, report.takeover


@pytest.mark.timeout(300)
def test_a_rolling_deploy_after_a_sentinel_failover_fails_no_call(redis_sentinel: LocalSentinel) -> None:
    """Sentinel: the Redis master is killed and a replica promoted, then the hosts are deployed in turn."""

    def failover_then_deploy(hosts: list[UvicornHost], redis_url: str) -> None:
        old = redis_sentinel.master()
        wait_until(lambda: replication_lag(redis_sentinel), lambda lag: lag == 0, bound=10,
                   what="the replica to hold every handshake")  # fmt: skip
        old.kill()
        assert redis_sentinel.wait_failover(old) is not old
        rolling_deploy(hosts, redis_url)

    clients, ts_result, report = drive(redis_sentinel.url, failover_then_deploy, adoptions=PYTHON_CLIENTS + 1)

    assert_no_call_failed(clients, ts_result)
    assert_one_owner_at_a_time(clients)
    assert sum(n for _, n in report.takeover.adopted) >= PYTHON_CLIENTS + 1, report.takeover


def replication_lag(sentinel: LocalSentinel) -> int:
    master, replica = sentinel.data[0], sentinel.data[1]
    with redis_client(master) as m, redis_client(replica) as r:
        return int(m.info("replication")["master_repl_offset"]) - int(r.info("replication")["slave_repl_offset"])


GRACE_EXCEEDED: Final = "timeout graceful shutdown exceeded"
"""What uvicorn logs when open connections held a stopping worker for its whole graceful period."""


@pytest.mark.timeout(120)
def test_a_host_relaying_a_stream_from_its_owner_ends_it_and_exits_without_waiting_out_its_grace(
    redis_server: RedisServer,
) -> None:
    """A session opened on the second host; its standalone GET stream reached the first, which relays it from the
    owner. The first host is stopped (SIGTERM): the relayed stream ends at once — the client would open it again
    elsewhere — and the host exits without waiting out its graceful period (which would hold its listening
    socket, and every connection a balancer opened to it meanwhile, until then)."""
    with deployment(redis_server.url) as (hosts, _):
        relay, owner = hosts
        opened = httpx.post(f"{owner.url}/mcp", json=initialize_request("streamer", "1.0"),
                            headers=session_headers(None), timeout=10)  # fmt: skip
        session_id = opened.headers["mcp-session-id"]
        headers = {**session_headers(session_id), "accept": "text/event-stream"}
        with httpx.stream("GET", f"{relay.url}/mcp", headers=headers, timeout=30) as stream:
            assert stream.status_code == 200, "the relay serves the owner's stream"
            assert relay._proc is not None
            terminate(relay._proc, timeout=30)  # SIGTERM, as `stop()` sends it (whose cleanup removes the log)
            log = relay.log()
            for _ in stream.iter_bytes():  # to its end, cleanly: the client is free to open it elsewhere
                pass
        relay.stop()

    assert "Finished server process" in log
    assert GRACE_EXCEEDED not in log, "the host waited out its graceful period for the stream it relayed"


INSPECTOR: Final = CLIENT_DIR / "node_modules" / ".bin" / "mcp-inspector"


@pytest.mark.timeout(300)
def test_the_inspector_cli_keeps_its_one_session_through_a_rolling_deploy(redis_server: RedisServer) -> None:
    """The MCP Inspector CLI (`--load`: one legacy session, a call every 50 ms) through nginx while both hosts
    are deployed in turn: every call succeeds, in the one session it opened."""
    require(INSPECTOR.exists(), f"the MCP Inspector CLI (npm ci in {CLIENT_DIR})")
    with deployment(redis_server.url) as (hosts, balancer):
        inspector = subprocess.Popen([
            str(INSPECTOR), "--cli", f"{balancer.url}/mcp", "--method", "tools/call", "--tool-name", "add",
            "--tool-arg", "a=1", "b=2", "--load", "--load-concurrency", "1", "--load-rate", str(int(1 / PERIOD)),
            "--load-duration", "20", "--format", "json",
        ], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            wait_until(lambda: read_report(redis_server.url, prefix=PREFIX, since=600).created, bool, bound=15,
                       what="the inspector's session")  # fmt: skip
            rolling_deploy(hosts, redis_server.url)
            out, err = inspector.communicate(timeout=60)
        finally:
            inspector.kill()
        report = wait_until(lambda: read_report(redis_server.url, prefix=PREFIX, since=600),
                            lambda r: sum(n for _, n in r.takeover.adopted) >= 1, bound=15,
                            what="the audit to count the adoption")  # fmt: skip

    assert inspector.returncode == 0, err[-2000:]
    summary = json.loads(out)["result"]
    assert (summary["errors"], summary["toolErrors"], summary["errorMessages"]) == (0, 0, []), summary
    assert summary["ok"] >= 200, summary
    (inspector_use,) = [c for c in report.migration.clients if c.name == "inspector-cli"]
    assert inspector_use.sessions == 1, "one session from the first call to the last"


@pytest.mark.timeout(300)
def test_a_crashed_host_costs_each_client_at_most_the_call_in_flight(redis_server: RedisServer) -> None:
    clients, ts_result, report = drive(redis_server.url, crash_and_restart, adoptions=1)

    assert ts_result.get("connected"), ts_result
    failed = {r["client"]: r["failed"] for r in clients} | {"typescript": ts_result.get("failed", 0)}
    assert max(failed.values()) <= 1, (failed, [r["errors"] for r in clients], ts_result.get("errors"))
    assert_one_owner_at_a_time(clients)
    assert all(r["ok"] > 50 for r in clients), clients
    assert dict(report.takeover.adopted).get("owner_gone", 0) >= 1, report.takeover
