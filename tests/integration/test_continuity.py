"""Session continuity with real processes: two hosts × `uvicorn --workers 2`, a round-robin nginx, Redis.

Every request of a legacy session may land on any of four workers; with
`MCP_SESSION_CONTINUITY=forward` the owner serves all of them. The official Python client
(`Client(url, mode="legacy")`) is driven here; the TypeScript SDK client in
`test_continuity_clients.py`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client
from mcp_types import ElicitResult

from mcp_registry.continuity import hop_request
from mcp_registry.continuity.hop_auth import HopSigner
from mcp_registry.continuity.sealed_id import Route, SessionIdSealer
from mcp_registry.demo._process import free_ports
from mcp_registry.demo.app import ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.proxies import haproxy_on_path, nginx_on_path
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.conftest import require
from tests.integration.continuity_stack import (
    HAPROXY_ROUTE_BY_SESSION,
    KEY,
    ROUTE_BY_SESSION,
    Deployment,
    deployment,
    dumps,
    host_env,
)

pytestmark = pytest.mark.integration
ROUNDS = 20


@pytest.fixture
def nginx_required() -> None:
    require(nginx_on_path() is not None, "nginx (Debian package)")


@pytest.fixture
def stack(redis_server: RedisServer, nginx_required: None) -> Iterator[Deployment]:
    with deployment(redis_server.url) as started:
        yield started


async def rounds(url: str, n: int = ROUNDS) -> tuple[list[int], list[str]]:
    """`n` rounds of tools/list + tools/call `count` on one legacy session: the counts, and the errors."""
    counts: list[int] = []
    errors: list[str] = []
    with anyio.fail_after(60):
        async with Client(url, mode="legacy") as client:
            for _ in range(n):
                try:
                    await client.list_tools()
                    result = await client.call_tool("count", {})
                    counts.append(int(result.content[0].text))  # type: ignore[union-attr]
                except Exception as exc:  # the client reports a failed call in its own way; count it
                    errors.append(repr(exc))
    return counts, errors


def open_session(base_url: str) -> str:
    response = httpx.post(f"{base_url}/mcp", json=initialize_request(), headers=session_headers(None), timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def call(base_url: str, session_id: str, name: str = "count", method: str = "POST") -> httpx.Response:
    if method == "DELETE":
        return httpx.delete(f"{base_url}/mcp", headers=session_headers(session_id), timeout=10)
    return httpx.post(f"{base_url}/mcp", json=tool_call(name, {}), headers=session_headers(session_id), timeout=10)


def sse_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of an SSE (or JSON) answer."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads(data[-1]))


# --- the official clients get through, and the owner keeps the session's state ----------------
async def test_the_official_python_client_keeps_its_session_through_round_robin_nginx(stack: Deployment) -> None:
    counts, errors = await rounds(stack.url)

    assert errors == []
    assert counts == list(range(1, ROUNDS + 1)), "every call was served by the process that holds the session"
    doc = await stack.audit_until(lambda d: d["forwarding"]["served"] > 0)
    assert doc["forwarding"]["served"] > 0, dumps(doc["forwarding"])
    assert doc["forwarding"]["failed"] == 0
    assert doc["lookups"]["fabricated"] == 0
    assert "Traceback" not in stack.logs()


async def test_progress_notifications_and_elicitation_complete_across_hops(stack: Deployment) -> None:
    reported: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append(progress)

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"ok": True})

    answers = []
    with anyio.fail_after(60):
        async with Client(stack.url, mode="legacy", elicitation_callback=on_elicit) as client:
            for _ in range(8):
                done = await client.call_tool("countdown", {"steps": 3}, progress_callback=on_progress)
                asked = await client.call_tool("confirm", {"question": "proceed?"})
                answers.append((done.content[0].text, asked.content[0].text))  # type: ignore[union-attr]

    assert answers == [("counted down 3 steps", "confirmed")] * 8
    assert reported == [1.0, 2.0, 3.0] * 8


def test_the_standalone_get_stream_is_forwarded_to_the_owner(stack: Deployment) -> None:
    a, b = stack.hosts
    session_id = open_session(a.url)
    headers = {**session_headers(session_id), "accept": "text/event-stream"}

    with httpx.stream("GET", f"{b.url}/mcp", headers=headers, timeout=10) as stream:  # another host
        status, content_type = stream.status_code, stream.headers.get("content-type", "")

    assert status == 200
    assert content_type.startswith("text/event-stream")


# --- made-up and tampered ids -------------------------------------------------------------------
async def test_a_tampered_id_gets_404_and_is_classified_fabricated(stack: Deployment) -> None:
    a, b = stack.hosts
    session_id = open_session(a.url)
    sdk_id, label, sealed = session_id.rsplit(".", 2)
    flipped = sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]
    tampered = f"{sdk_id}.{label}.{flipped}"

    answers = [call(host.url, tampered).status_code for host in (a, b, a, b)]

    assert answers == [404] * 4
    doc = await stack.audit_until(lambda d: d["lookups"]["fabricated"] >= 4)
    assert doc["lookups"]["fabricated"] == 4, dumps(doc["lookups"])
    assert doc["forwarding"]["forwarded"] == 0, "a forged id is never forwarded"
    assert sse_result(call(b.url, session_id))["result"]["content"][0]["text"] == "1", "the real session still works"


def test_the_internal_listener_refuses_requests_that_were_not_forwarded(redis_server: RedisServer) -> None:
    listen_port = _free_port("127.0.0.2")
    env = {**host_env("127.0.0.2", redis_server.url), "MCP_SESSION_FORWARD_LISTEN": f"127.0.0.2:{listen_port}"}
    with UvicornHost("127.0.0.2", workers=1, env=env) as host:
        session_id = open_session(host.url)
        internal = f"http://127.0.0.2:{listen_port}/mcp"
        body = tool_call("count", {})
        headers = session_headers(session_id)

        def post(extra: list[tuple[bytes, bytes]]) -> int:
            hdrs = [(k.encode(), v.encode()) for k, v in headers.items()] + extra
            return httpx.post(internal, json=body, headers=hdrs, timeout=5).status_code

        route = SessionIdSealer(KEY.encode()).open(session_id)
        assert isinstance(route, Route)
        signer = HopSigner(KEY.encode(), boot=b"\x01" * 8, worker_id="test-forwarder")
        wrong = HopSigner(b"pB4n1UQ8F0a7w2xR9eV3kJmZ5tYcHdLsGqNiAoXuWjE", boot=b"\x02" * 8, worker_id="test-forwarder")

        def request_of(sid: str) -> bytes:
            headers = [(b"host", f"127.0.0.2:{host.port}".encode())]
            headers += [(k.encode(), v.encode()) for k, v in session_headers(sid).items()]
            scope = {"path": "/mcp", "headers": headers, "scheme": "http"}
            return hop_request.encode(scope)

        Headers = list[tuple[bytes, bytes]]

        def hop(sid: str, *, by: HopSigner = signer, to: bytes = route.boot, ago: float = 0.0) -> Headers:
            request = request_of(sid)
            return by.headers(destination=to, method="POST", request=request, now=time.time() - ago)

        valid = hop(session_id)
        assert post([]) == 401, "a request with no hop at all"
        assert post([(b"mcp-registry-hop", b"v2.garbage"), (b"mcp-registry-hop-worker", b"x"),
                     (b"mcp-registry-hop-request", b"{}")]) == 403  # fmt: skip
        assert post(hop(session_id, by=wrong)) == 403, "a hop signed with another key"
        other = request_of(session_id + "x")
        moved = [(n, other if n == b"mcp-registry-hop-request" else v) for n, v in hop(session_id)]
        assert post(moved) == 403, "a hop moved to another session"
        assert post(hop(session_id, to=b"\x09" * 8)) == 410, "an authentic hop for another process (gone)"
        assert post(hop(session_id, ago=3600)) == 403, "a hop from an hour ago"
        assert post(valid) == 200, "a hop the deployment's key signed"
        assert post(valid) == 403, "the same hop replayed"


def _free_port(host: str) -> int:
    return free_ports(1, host)[0]


# --- failure: owner gone, DELETE, Redis down ------------------------------------------------------
async def test_a_sigkilled_owner_gives_a_prompt_404_and_a_fresh_initialize_works(stack: Deployment) -> None:
    a, b = stack.hosts
    session_id = open_session(a.url)
    owner = sse_result(call(a.url, session_id, "whoami"))["result"]["content"][0]["text"]
    owner_pid = int(owner.rpartition(":")[2])
    assert owner_pid in a.worker_pids()

    os.kill(owner_pid, signal.SIGKILL)
    answers = []
    for host in (b, a, b, a, b, a):
        started = time.monotonic()
        response = call(host.url, session_id)
        answers.append((response.status_code, time.monotonic() - started))

    assert [status for status, _ in answers] == [404] * 6
    assert max(seconds for _, seconds in answers) < 1.0, answers
    counts, errors = await rounds(stack.url, 10)
    assert (counts, errors) == (list(range(1, 11)), [])
    doc = await stack.audit_until(lambda d: d["lookups"]["expired"] >= 6)
    assert doc["lookups"]["expired"] >= 6, dumps(doc["lookups"])
    assert doc["forwarding"]["failed_by_reason"]["owner_gone"] >= 1, dumps(doc["forwarding"])


async def test_a_cross_worker_delete_ends_the_session_on_its_owner(stack: Deployment) -> None:
    a, b = stack.hosts
    session_id = open_session(a.url)

    deleted = call(b.url, session_id, method="DELETE")  # another host: the owner must end it

    assert deleted.status_code == 200
    assert [call(host.url, session_id).status_code for host in (a, a, b, b)] == [404] * 4
    doc = await stack.audit_until(lambda d: d["sessions"]["ended_by_reason"].get("deleted", 0) >= 1)
    assert doc["sessions"]["ended_by_reason"]["deleted"] == 1


async def test_redis_stopped_mid_run_changes_nothing_for_forwarded_traffic(
    stack: Deployment, redis_server: RedisServer
) -> None:
    counts: list[int] = []
    with anyio.fail_after(60):
        async with Client(stack.url, mode="legacy") as client:
            for i in range(2 * ROUNDS):
                if i == ROUNDS:
                    redis_server.kill()
                result = await client.call_tool("count", {})
                counts.append(int(result.content[0].text))  # type: ignore[union-attr]

    assert counts == list(range(1, 2 * ROUNDS + 1))


# --- continuity off, and a balancer that routes by session ----------------------------------------
async def test_continuity_off_keeps_todays_ids_and_behaviour(redis_server: RedisServer, nginx_required: None) -> None:
    def off(i: int, address: str) -> dict[str, str]:
        return host_env(address, redis_server.url, continuity="off")

    with deployment(redis_server.url, env=off) as stack:
        session_id = open_session(stack.hosts[0].url)
        _, errors = await rounds(stack.url, 8)

    assert len(session_id) == 32, "the SDK's own uuid4 hex, unchanged"
    assert int(session_id, 16) >= 0
    assert errors, "without continuity a hop between workers fails, as it always did"
    assert all("Session not found" in e for e in errors)


@pytest.mark.parametrize("balancer", ["nginx", "haproxy"])
async def test_a_balancer_routing_by_the_id_s_host_label_needs_no_hop(redis_server: RedisServer, balancer: str) -> None:
    require((nginx_on_path() if balancer == "nginx" else haproxy_on_path()) is not None, f"{balancer} (Debian package)")

    def labelled(i: int, address: str) -> dict[str, str]:
        return host_env(address, redis_server.url, label=f"app-{i + 1}")

    config = ROUTE_BY_SESSION if balancer == "nginx" else HAPROXY_ROUTE_BY_SESSION
    with deployment(redis_server.url, balancer=config, workers=1, env=labelled) as stack:
        counts, errors = await rounds(stack.url)
        doc = await stack.audit_until(lambda d: d["sessions"]["created"] >= 1)

    assert (counts, errors) == (list(range(1, ROUNDS + 1)), [])
    assert doc["forwarding"]["forwarded"] == 0, "nginx sent every request of the session to its host"
    assert doc["lookups"]["cross_worker"] == 0


async def test_json_responses_are_forwarded_too(redis_server: RedisServer, nginx_required: None) -> None:
    def json_hosts(i: int, address: str) -> dict[str, str]:
        return {**host_env(address, redis_server.url), ENV_JSON_RESPONSE: "1"}

    with deployment(redis_server.url, env=json_hosts) as stack:
        counts, errors = await rounds(stack.url)

    assert (counts, errors) == (list(range(1, ROUNDS + 1)), [])
