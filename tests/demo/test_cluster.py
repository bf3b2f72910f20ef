from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import pytest
import redis
from mcp import Client
from mcp_types import TextContent

from mcp_registry.demo._process import ChildFailedError
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.registry.key_schema import KeySchema

pytestmark = pytest.mark.integration

StartCluster = Callable[..., WorkerCluster]
KEYS = KeySchema("mcpreg")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"accept": "application/json, text/event-stream"}


def registry_env(server: RedisServer) -> dict[str, str]:
    return {
        "MCP_SESSION_REGISTRY": "1",
        "MCP_SESSION_REGISTRY_URL": server.url,
        "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "0.2",
    }


def open_session(base_url: str) -> str | None:
    response = httpx.post(base_url + "/mcp", json=INITIALIZE, headers=HEADERS, timeout=5)
    assert response.status_code == 200
    session_id: str | None = response.headers.get("mcp-session-id")
    return session_id


def keys(server: RedisServer, pattern: str) -> list[bytes]:
    return list(redis.Redis.from_url(server.url).scan_iter(match=pattern))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_each_worker_serves_on_its_own_port_under_its_own_id(worker_cluster: StartCluster) -> None:
    cluster = worker_cluster(2)
    assert cluster.worker_ids == ["worker-0", "worker-1"]
    assert len(set(cluster.urls)) == 2
    answers = []
    for url in cluster.urls:
        async with Client(url + "/mcp", mode="legacy") as client:
            result = await client.call_tool("whoami", {})
        answers.append([block.text for block in result.content if isinstance(block, TextContent)])
    assert answers == [["worker-0"], ["worker-1"]]


def test_worker_env_applies_to_one_worker_only(worker_cluster: StartCluster) -> None:
    cluster = worker_cluster(2, worker_env=lambda i: {"MCP_DEMO_STATELESS": "1" if i == 1 else "0"})
    assert open_session(cluster.urls[0]) is not None
    assert open_session(cluster.urls[1]) is None  # stateless: no session is issued


def test_stop_is_graceful_so_the_registry_records_open_sessions_as_ended(
    worker_cluster: StartCluster, redis_server: RedisServer
) -> None:
    cluster = worker_cluster(1, env=registry_env(redis_server))
    assert open_session(cluster.urls[0]) is not None
    assert keys(redis_server, KEYS.tombstone("*")) == []
    cluster.stop()
    assert len(keys(redis_server, KEYS.tombstone("*"))) == 1


def test_kill_is_a_crash_one_worker_dies_at_once_and_the_others_keep_serving(
    worker_cluster: StartCluster, redis_server: RedisServer
) -> None:
    cluster = worker_cluster(2, env=registry_env(redis_server))
    assert open_session(cluster.urls[1]) is not None
    deadline = time.monotonic() + 10
    while not keys(redis_server, KEYS.session("*")):  # recorded in the background
        assert time.monotonic() < deadline, "the session was never recorded"
        time.sleep(0.05)
    cluster.kill(1)
    assert not cluster.running(1)
    assert httpx.get(cluster.urls[0] + "/healthz").status_code == 200
    assert keys(redis_server, KEYS.tombstone("*")) == []  # no shutdown ran on the killed worker


def test_restart_is_a_deploy_the_old_process_stops_gracefully_and_a_new_one_serves_on_its_port(
    worker_cluster: StartCluster, redis_server: RedisServer
) -> None:
    cluster = worker_cluster(2, env=registry_env(redis_server))
    old, url = cluster.pids[0], cluster.urls[0]
    assert open_session(url) is not None
    cluster.restart(0)
    assert not process_exists(old)
    assert cluster.pids[0] != old
    assert cluster.urls[0] == url
    assert open_session(url) is not None, "the new process serves where the old one did"
    assert len(keys(redis_server, KEYS.tombstone("*"))) == 1, "the old one ran its shutdown (continuity off)"


def test_stop_leaves_no_worker_process(worker_cluster: StartCluster) -> None:
    cluster = worker_cluster(2)
    pids = cluster.pids
    cluster.stop()
    assert [pid for pid in pids if process_exists(pid)] == []
    cluster.stop()  # idempotent


def test_a_worker_that_cannot_start_fails_with_its_log_and_leaves_nothing() -> None:
    cluster = WorkerCluster(2, app="no_such_module_here:app", startup_timeout=20)
    with pytest.raises(ChildFailedError, match="no_such_module_here"):
        cluster.start()
    assert [pid for pid in cluster.pids if process_exists(pid)] == []


def test_a_worker_whose_port_was_taken_meanwhile_fails_even_if_another_server_answers_there(
    worker_cluster: StartCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    someone_else = worker_cluster(1)  # e.g. another demo running on this machine
    monkeypatch.setattr("mcp_registry.demo._process.free_ports", lambda count: someone_else.ports[:count])
    with pytest.raises(ChildFailedError, match="exited with code"):
        WorkerCluster(1).start()
