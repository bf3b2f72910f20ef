"""Sessions across real workers: what a client sees and what the spans say, with a real Redis.

Two flavours of "two workers":
- in this process, two SDK apps on two real uvicorn servers sharing a real redis-server, so the
  test can read the spans each worker produced (in-memory exporter);
- real worker processes (`WorkerCluster`), for what a client sees and what Redis receives.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import redis
from mcp import Client
from mcp.server.mcpserver import MCPServer

from mcp_registry import RegistryConfig, SessionRegistryMiddleware
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.telemetry import (
    ATTR_ACTION,
    ATTR_ID_HASH,
    ATTR_LEGITIMATE,
    ATTR_ORIGIN_WORKER,
    ATTR_STATUS,
    ATTR_WORKER_ID,
)
from mcp_registry.testing import (
    CapturedTelemetry,
    capture_telemetry,
    initialize_request,
    serve,
    session_headers,
    tool_call,
)

pytestmark = pytest.mark.integration

_ids = itertools.count(100)


def registry_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "MCP_SESSION_REGISTRY": "1",
        "MCP_SESSION_REGISTRY_URL": redis_url,
        "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "1",
        **extra,
    }


async def initialize(client: httpx.AsyncClient, url: str, *, stale: str | None = None) -> str:
    response = await client.post(f"{url}/mcp", json=initialize_request(), headers=session_headers(stale))
    assert response.status_code == 200, response.text
    session_id: str = response.headers["mcp-session-id"]
    return session_id


async def call(client: httpx.AsyncClient, url: str, session_id: str | None) -> httpx.Response:
    body = tool_call("add", {"a": 20, "b": 22}, request_id=next(_ids))
    return await client.post(f"{url}/mcp", json=body, headers=session_headers(session_id))


# --- in-process workers: the spans ---------------------------------------------------------------
class InProcessWorker:
    def __init__(self, name: str, redis_url: str) -> None:
        server = MCPServer("integration", log_level="WARNING")

        @server.tool()
        def add(a: int, b: int) -> int:
            return a + b

        self.telemetry: CapturedTelemetry = capture_telemetry()
        self.app = SessionRegistryMiddleware(
            server.streamable_http_app(json_response=True),
            session_manager=server.session_manager,
            config=RegistryConfig(enabled=True, url=redis_url, worker_id=name, refresh_seconds=1.0),
            tracer_provider=self.telemetry.tracer_provider,
            meter_provider=self.telemetry.meter_provider,
        )
        self.url = ""

    def resolved(self, count: int) -> list[dict[str, Any]]:
        spans = self.telemetry.spans()
        assert len(spans) >= count
        return [dict(span.attributes or {}) for span in spans]


@asynccontextmanager
async def two_workers(redis_url: str) -> AsyncIterator[tuple[InProcessWorker, InProcessWorker]]:
    a, b = InProcessWorker("worker-a", redis_url), InProcessWorker("worker-b", redis_url)
    async with serve(a.app) as url_a, serve(b.app) as url_b:
        a.url, b.url = url_a, url_b
        yield a, b


async def spans_of(worker: InProcessWorker, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        while len(worker.telemetry.spans()) < count:
            await anyio.sleep(0.02)
    return worker.resolved(count)


async def test_spans_tell_legitimate_ids_from_made_up_ones(redis_server: RedisServer) -> None:
    async with two_workers(redis_server.url) as (a, b), httpx.AsyncClient(timeout=10) as http:
        hopping = await initialize(http, a.url)
        deleted = await initialize(http, a.url)
        assert (await http.delete(f"{a.url}/mcp", headers=session_headers(deleted))).status_code == 200

        hop = await call(http, b.url, hopping)
        assert hop.status_code == 404  # the spec policy: the SDK's answer, the client starts over
        assert (await call(http, b.url, deleted)).status_code == 404
        assert (await call(http, b.url, "made-up-by-a-client")).status_code == 404
        assert (await call(http, b.url, "bad id\twith controls")).status_code == 404

        attributes = await spans_of(b, 4)
        # A's own requests made no span of ours.
        assert a.telemetry.spans() == []

    by_status = {span[ATTR_STATUS]: span for span in attributes}
    assert set(by_status) == {"cross_worker", "expired", "fabricated", "malformed"}
    for span in attributes:
        assert span[ATTR_WORKER_ID] == "worker-b"
        assert span[ATTR_ACTION] == "reject"
    assert by_status["cross_worker"][ATTR_LEGITIMATE] is True
    assert by_status["cross_worker"][ATTR_ORIGIN_WORKER] == "worker-a"
    assert by_status["expired"][ATTR_LEGITIMATE] is True
    assert by_status["expired"][ATTR_ORIGIN_WORKER] == "worker-a"
    assert by_status["fabricated"][ATTR_LEGITIMATE] is False
    assert ATTR_ORIGIN_WORKER not in by_status["fabricated"]
    assert by_status["malformed"][ATTR_LEGITIMATE] is False
    # The hash is the deployment's: the same id hashes alike on every worker.
    assert by_status["cross_worker"][ATTR_ID_HASH] == b.app.runtime.hasher.hash(hopping)
    assert a.app.runtime.hasher.hash(hopping) == b.app.runtime.hasher.hash(hopping)


async def test_the_official_client_behind_a_non_sticky_balancer_breaks_visibly(redis_server: RedisServer) -> None:
    """A legacy client whose requests alternate between workers fails; the spans say why."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with two_workers(redis_server.url) as (a, b):
        upstreams = itertools.cycle([a.url, b.url])

        class RoundRobin(httpx2.AsyncBaseTransport):
            def __init__(self) -> None:
                self._inner = httpx2.AsyncHTTPTransport()

            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                target = httpx2.URL(next(upstreams))
                request.url = request.url.copy_with(host=target.host, port=target.port)
                return await self._inner.handle_async_request(request)

            async def aclose(self) -> None:
                await self._inner.aclose()

        failures: list[str] = []
        async with httpx2.AsyncClient(transport=RoundRobin(), timeout=10) as http:
            transport = streamable_http_client("http://127.0.0.1:1/mcp", http_client=http, terminate_on_close=False)
            try:
                with anyio.fail_after(20):
                    async with Client(transport, mode="legacy") as client:
                        for _ in range(3):
                            await client.call_tool("add", {"a": 1, "b": 2})
            except Exception as exc:  # the client surfaces the 404 in its own way
                failures.append(repr(exc))
        attributes = await spans_of(b, 1)

    assert failures, "a legacy session hopping between workers cannot work under the spec policy"
    assert attributes[0][ATTR_STATUS] == "cross_worker"
    assert attributes[0][ATTR_LEGITIMATE] is True
    assert attributes[0][ATTR_ORIGIN_WORKER] == "worker-a"


# --- real worker processes --------------------------------------------------------------------
@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[WorkerCluster]:
    with WorkerCluster(2, env=registry_env(redis_server.url)) as started:
        yield started


async def test_stale_delete_is_answered_here_and_leaves_the_owner_alone(cluster: WorkerCluster) -> None:
    a, b = cluster.urls
    async with httpx.AsyncClient(timeout=10) as http:
        session_id = await initialize(http, a)
        response = await http.delete(f"{b}/mcp", headers=session_headers(session_id))
        assert response.status_code == 200  # the SDK would have said 404: it never saw the request
        assert (await call(http, a, session_id)).json()["result"]["content"][0]["text"] == "42"


async def test_initialize_with_a_stale_id_opens_a_fresh_session(cluster: WorkerCluster) -> None:
    a, b = cluster.urls
    async with httpx.AsyncClient(timeout=10) as http:
        old = await initialize(http, a)
        fresh = await initialize(http, b, stale=old)
        assert fresh != old
        assert (await call(http, b, fresh)).status_code == 200


async def test_stale_calls_get_the_sdk_404_under_spec_and_are_stripped_under_strip(redis_server: RedisServer) -> None:
    env = registry_env(redis_server.url, MCP_SESSION_STALE_POLICY="strip")
    with WorkerCluster(2, env=env) as strip_cluster:
        a, b = strip_cluster.urls
        async with httpx.AsyncClient(timeout=10) as http:
            session_id = await initialize(http, a)
            stripped = await call(http, b, session_id)
    # Stripped, the request reaches the stateful SDK without an id: its "Missing session ID".
    assert stripped.status_code == 400
    assert "Missing session ID" in stripped.text
    assert "mcp-session-id" in stripped.headers


async def test_spec_policy_stale_call_gets_404(cluster: WorkerCluster) -> None:
    a, b = cluster.urls
    async with httpx.AsyncClient(timeout=10) as http:
        session_id = await initialize(http, a)
        response = await call(http, b, session_id)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"


async def use_independently(urls: Sequence[str]) -> list[str]:
    results: list[str] = []

    async def one(url: str, n: int) -> None:
        async with Client(f"{url}/mcp", mode="legacy") as client:
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} >= {"add", "echo", "whoami"}
            result = await client.call_tool("add", {"a": n, "b": n})
            results.append(result.content[0].text)  # type: ignore[union-attr]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n, url in enumerate(urls):
                tg.start_soon(one, url, n + 1)
    return sorted(results)


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_independent_clients_and_plain_http_work(redis_server: RedisServer, stateless: bool) -> None:
    env = registry_env(redis_server.url, MCP_DEMO_STATELESS="1" if stateless else "0")
    with WorkerCluster(1, env=env) as single:
        (url,) = single.urls
        assert await use_independently([url, url]) == ["2", "4"]
        async with httpx.AsyncClient(timeout=10) as http:  # as curl would: no session header at all
            init = await http.post(f"{url}/mcp", json=initialize_request(), headers=session_headers(None))
            assert init.status_code == 200
            session_id = init.headers.get("mcp-session-id")
            assert (session_id is None) is stateless
            assert (await call(http, url, session_id)).status_code == 200


async def test_twenty_concurrent_tool_calls_on_one_worker_all_succeed(cluster: WorkerCluster) -> None:
    results: list[str] = []
    async with Client(f"{cluster.urls[0]}/mcp", mode="legacy") as client:

        async def one(n: int) -> None:
            result = await client.call_tool("add", {"a": n, "b": 0})
            results.append(result.content[0].text)  # type: ignore[union-attr]

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(one, n)
    assert sorted(results, key=int) == [str(n) for n in range(20)]


def command_calls(server: RedisServer) -> dict[str, int]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_with_the_registry_off_redis_receives_no_command(redis_server: RedisServer) -> None:
    env = {"MCP_SESSION_REGISTRY": "0", "MCP_SESSION_REGISTRY_URL": redis_server.url}
    before = command_calls(redis_server)
    with WorkerCluster(2, env=env) as off:
        a, b = off.urls
        async with httpx.AsyncClient(timeout=10) as http:
            session_id = await initialize(http, a)
            assert (await call(http, a, session_id)).status_code == 200
            assert (await call(http, b, session_id)).status_code == 404  # still decided: spec → reject
            assert (await initialize(http, b, stale=session_id)) != session_id  # strip
            assert (await http.delete(f"{b}/mcp", headers=session_headers(session_id))).status_code == 200
    after = command_calls(redis_server)
    # Only this test's own connection (HELLO) and INFO reached Redis.
    assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {"hello": 1, "info": 1}


async def test_requests_survive_redis_stopping_and_the_registry_recovers(
    redis_server: RedisServer, cluster: WorkerCluster
) -> None:
    a, _ = cluster.urls
    async with httpx.AsyncClient(timeout=10) as http:
        before = await initialize(http, a)
        redis_server.kill()
        for _ in range(5):
            with anyio.fail_after(5):  # no request waits on the dead Redis
                session_id = await initialize(http, a)
                assert (await call(http, a, session_id)).status_code == 200
        assert (await call(http, a, before)).status_code == 200
        redis_server.restart()
        after = await initialize(http, a)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            with anyio.fail_after(15):
                # The restarted Redis is empty; the refresh re-asserts every live session.
                while len(list(client.scan_iter(match="mcpreg:s:*"))) < 7:
                    await anyio.sleep(0.1)
        finally:
            client.close()
        assert (await call(http, a, after)).status_code == 200
