"""Forwarding in process: two wrapped SDK apps with real internal listeners on loopback.

What an operator sees of a hop (spans and metrics) and what a client gets when the owner is
there, gone, or the id was forged — with the in-memory OpenTelemetry exporter and reader.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from pydantic import AnyHttpUrl
from starlette.requests import Request

from mcp_registry import RegistryConfig, SessionRegistryMiddleware
from mcp_registry.config import Continuity
from mcp_registry.continuity.sealed_id import Route
from mcp_registry.demo._process import free_ports
from mcp_registry.telemetry import (
    ATTR_ACTION,
    ATTR_END_REASON,
    ATTR_FORWARD_FAILURE,
    ATTR_HOP_SECONDS,
    ATTR_LEGITIMATE,
    ATTR_ORIGIN_WORKER,
    ATTR_STATUS,
    ATTR_WORKER_ID,
    METRIC_FORWARD_FAILURES,
    METRIC_FORWARD_REFUSED,
    METRIC_FORWARD_SERVED,
    METRIC_LOOKUPS,
    METRIC_REUSE,
)
from mcp_registry.testing import (
    CapturedTelemetry,
    capture_telemetry,
    initialize_request,
    lifespan,
    session_headers,
    tool_call,
)

KEY = b"HkQmjFG7lrnAtZ1jakXPEFXbbmZ71jrWoWKtjoOZY7I"


class Tokens:
    """A token verifier with two principals, as an application with OAuth has."""

    async def verify_token(self, token: str) -> AccessToken | None:
        principals = {"alice-token": "alice", "bob-token": "bob"}
        return AccessToken(token=token, client_id=principals[token], scopes=[]) if token in principals else None


class Worker:
    def __init__(self, name: str, *, auth: bool = False, **config: Any) -> None:
        settings = AuthSettings(
            issuer_url=AnyHttpUrl("https://auth.example"),
            resource_server_url=AnyHttpUrl("http://127.0.0.1:8000/mcp"),
            validate_token_resource=False,
        )
        server = (
            MCPServer(f"forwarding-{name}", token_verifier=Tokens(), auth=settings)
            if auth else MCPServer(f"forwarding-{name}")
        )
        calls: dict[str, int] = {}
        self.never = anyio.Event()
        self.entered = anyio.Event()

        @server.tool()
        def whoami() -> str:
            return name

        @server.tool()
        async def stuck() -> str:
            self.entered.set()
            await self.never.wait()  # an owner that answers only when the test says so
            return "released"

        @server.tool()
        def add(a: int, b: int) -> int:
            return a + b

        @server.tool()
        def seen(ctx: Context) -> str:
            """What the application sees of the request that called it."""
            request = ctx.request_context.request
            assert isinstance(request, Request)
            return json.dumps({
                "worker": name, "client": list(request.client) if request.client else None,
                "scheme": request.url.scheme, "pool": getattr(request.state, "pool", None),
                "label": [v.hex() for n, v in request.scope["headers"] if n == b"x-label"],
                "query": request.scope["query_string"].decode("latin-1"),
            })  # fmt: skip

        self.name = name
        self.calls = calls
        self.telemetry: CapturedTelemetry = capture_telemetry()
        inner = server.streamable_http_app(json_response=True)
        opening = inner.router.lifespan_context

        @asynccontextmanager
        async def with_a_pool(app: Any) -> AsyncIterator[dict[str, str]]:
            async with opening(app):
                yield {"pool": f"pool-of-{name}"}  # the app's lifespan state, as `request.state.pool`

        inner.router.lifespan_context = with_a_pool
        self.app = SessionRegistryMiddleware(
            inner,
            session_manager=server.session_manager,
            config=RegistryConfig(
                worker_id=name, hash_key=KEY, continuity=Continuity.FORWARD,
                **{"forward_listen": "127.0.0.1:0", **config},
            ),
            tracer_provider=self.telemetry.tracer_provider,
            meter_provider=self.telemetry.meter_provider,
        )

    @asynccontextmanager
    async def running(
        self, client_address: tuple[str, int] = ("127.0.0.1", 123), scheme: str = "http"
    ) -> AsyncIterator[httpx.AsyncClient]:
        async with lifespan(self.app):
            transport = httpx.ASGITransport(app=self.app, client=client_address)
            base_url = f"{scheme}://127.0.0.1:8000"
            async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=10) as client:
                yield client


async def open_session(client: httpx.AsyncClient, token: str | None = None) -> str:
    response = await client.post("/mcp", json=initialize_request(), headers=with_token(session_headers(None), token))
    assert response.status_code == 200
    return response.headers["mcp-session-id"]


async def whoami(client: httpx.AsyncClient, session_id: str, token: str | None = None) -> httpx.Response:
    headers = with_token(session_headers(session_id), token)
    return await client.post("/mcp", json=tool_call("whoami", {}), headers=headers)


def with_token(headers: dict[str, str], token: str | None) -> dict[str, str]:
    return headers if token is None else {**headers, "authorization": f"Bearer {token}"}


Pair = tuple[Worker, httpx.AsyncClient, Worker, httpx.AsyncClient]


@asynccontextmanager
async def running_pair() -> AsyncIterator[Pair]:
    """Two workers, their lifespans running (entered and left in the test's own task)."""
    a, b = Worker("worker-a"), Worker("worker-b")
    async with AsyncExitStack() as stack:
        client_a = await stack.enter_async_context(a.running())
        client_b = await stack.enter_async_context(b.running())
        yield a, client_a, b, client_b


async def test_a_request_on_another_worker_s_session_is_served_by_its_owner() -> None:
    async with running_pair() as (a, client_a, b, client_b):
        session_id = await open_session(client_a)

        response = await whoami(client_b, session_id)

        assert response.status_code == 200
        assert response.json()["result"]["content"][0]["text"] == "worker-a"
        assert response.headers["mcp-session-id"] == session_id
        assert not any(name.startswith("mcp-registry") for name in response.headers), "internal headers stay inside"
        [span] = b.telemetry.spans()
        attrs = dict(span.attributes or {})
        assert attrs[ATTR_ACTION] == "forward"
        assert attrs[ATTR_STATUS] == "cross_worker"
        assert attrs[ATTR_LEGITIMATE] is True
        assert attrs[ATTR_ORIGIN_WORKER] == "worker-a"
        assert attrs[ATTR_WORKER_ID] == "worker-b"
        assert 0 < float(attrs[ATTR_HOP_SECONDS]) < 5  # type: ignore[arg-type]
        assert b.telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__action="forward") == 1
        assert b.telemetry.metric_total(METRIC_REUSE, mcp_registry__session__origin_worker="worker-a") == 1
        assert a.telemetry.metric_total(METRIC_FORWARD_SERVED, mcp_registry__forward__from_worker="worker-b") == 1
        assert a.telemetry.spans() == [], "the owner serves it as its own session: no span of ours there"


async def test_an_own_session_request_makes_no_span_with_continuity_on() -> None:
    async with running_pair() as (a, client_a, _, _):
        session_id = await open_session(client_a)

        assert (await whoami(client_a, session_id)).status_code == 200
        assert a.telemetry.spans() == []


async def test_a_forged_id_is_fabricated_in_process_and_never_forwarded() -> None:
    async with running_pair() as (a, client_a, b, client_b):
        sdk_id, label, sealed = (await open_session(client_a)).split(".")
        tail = "BBBB" if sealed.endswith("AAAA") else "AAAA"
        forged = f"{sdk_id}.{label}.{sealed[:-4]}{tail}"

        response = await whoami(client_b, forged)

        assert response.status_code == 404
        [span] = b.telemetry.spans()
        assert dict(span.attributes or {})[ATTR_STATUS] == "fabricated"
        assert dict(span.attributes or {})[ATTR_LEGITIMATE] is False
        assert a.telemetry.metric_total(METRIC_FORWARD_SERVED) == 0


async def test_an_id_this_worker_issued_and_no_longer_holds_is_expired_in_process() -> None:
    async with running_pair() as (a, client_a, _, _):
        session_id = await open_session(client_a)
        assert (await client_a.delete("/mcp", headers=session_headers(session_id))).status_code == 200

        response = await whoami(client_a, session_id)

        assert response.status_code == 404
        [span] = a.telemetry.spans()
        assert dict(span.attributes or {})[ATTR_STATUS] == "expired"


async def test_a_delete_on_another_worker_ends_the_session_at_its_owner() -> None:
    async with running_pair() as (a, client_a, _, client_b):
        session_id = await open_session(client_a)

        deleted = await client_b.delete("/mcp", headers=session_headers(session_id))

        assert deleted.status_code == 200
        assert (await whoami(client_a, session_id)).status_code == 404
        assert len(a.app.runtime.book) == 0


async def test_when_the_owner_is_gone_the_answer_is_a_prompt_404_and_says_worker_lost() -> None:
    a, b = Worker("worker-a"), Worker("worker-b")
    async with b.running() as client_b:
        async with a.running() as client_a:
            session_id = await open_session(client_a)
        # worker-a stopped: its listener is closed

        started = time.monotonic()
        response = await whoami(client_b, session_id)
        elapsed = time.monotonic() - started
        deleted = await client_b.delete("/mcp", headers=session_headers(session_id))

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"
    assert elapsed < 1.0
    assert deleted.status_code == 200, "a DELETE of a session whose owner is gone: it is gone, as asked"
    first = dict(b.telemetry.spans()[0].attributes or {})
    assert first[ATTR_STATUS] == "expired"
    assert first[ATTR_END_REASON] == "worker_lost"
    assert first[ATTR_FORWARD_FAILURE] == "owner_gone"
    assert first[ATTR_ACTION] == "reject"
    assert b.telemetry.metric_total(METRIC_FORWARD_FAILURES, mcp_registry__forward__failure="owner_gone") == 2


async def test_a_session_opened_by_one_principal_is_not_served_to_another_across_a_hop() -> None:
    a, b = Worker("worker-a", auth=True), Worker("worker-b", auth=True)
    async with a.running() as client_a, b.running() as client_b:
        session_id = await open_session(client_a, "alice-token")

        alice = await whoami(client_b, session_id, "alice-token")
        bob = await whoami(client_b, session_id, "bob-token")
        nobody = await whoami(client_b, session_id)

    assert alice.status_code == 200, "the Authorization header travelled with the hop"
    assert bob.status_code == 404, "the SDK's credential binding holds on the owner"
    assert nobody.status_code == 401


async def test_an_owner_shutting_down_lets_a_forwarded_request_finish() -> None:
    a, b = Worker("worker-a"), Worker("worker-b")
    stop_a = anyio.Event()
    opened: dict[str, str] = {}
    answers: list[httpx.Response] = []

    async def run_owner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with a.running() as client_a:
            opened["id"] = await open_session(client_a)
            task_status.started()
            await stop_a.wait()
        # leaving the block is the owner's lifespan shutdown (what SIGTERM gives under uvicorn)

    with anyio.fail_after(20):
        async with b.running() as client_b, anyio.create_task_group() as tg:
            await tg.start(run_owner)

            async def call() -> None:
                body = tool_call("stuck", {})
                answers.append(await client_b.post("/mcp", json=body, headers=session_headers(opened["id"])))

            tg.start_soon(call)
            await a.entered.wait()  # the forwarded call runs on the owner
            stop_a.set()  # the owner starts shutting down now
            assert a.app.continuity is not None
            while a.app.continuity.route is not None:  # until its listener has stopped taking new hops
                await anyio.sleep(0.01)
            a.never.set()  # the tool finishes during the shutdown

    [answer] = answers
    assert answer.status_code == 200
    assert answer.json()["result"]["content"][0]["text"] == "released"


async def test_a_slow_owner_is_bounded_by_the_forward_timeout() -> None:
    a, b = Worker("worker-a"), Worker("worker-b", forward_timeout=0.5)
    async with a.running() as client_a, b.running() as client_b:
        session_id = await open_session(client_a)
        started = time.monotonic()
        response = await client_b.post("/mcp", json=tool_call("stuck", {}), headers=session_headers(session_id))
        elapsed = time.monotonic() - started
        a.never.set()

    assert response.status_code == 504
    assert response.json()["error"]["message"] == "The worker that owns this session did not answer in time"
    assert 0.5 <= elapsed < 3
    assert b.telemetry.metric_total(METRIC_FORWARD_FAILURES, mcp_registry__forward__failure="timeout") == 1


async def test_the_internal_listener_counts_what_it_refuses() -> None:
    async with running_pair() as (a, client_a, _, _):
        session_id = await open_session(client_a)
        assert a.app.continuity is not None
        assert a.app.continuity.route is not None
        internal = f"http://{a.app.continuity.route.address}/mcp"

        async with httpx.AsyncClient(timeout=5) as direct:
            body = tool_call("add", {"a": 1, "b": 2})
            plain = await direct.post(internal, json=body, headers=session_headers(session_id))
            hop = {"mcp-registry-hop": f"v2.{'01' * 8}.{'02' * 8}.1.{int(time.time() * 1000)}.{'A' * 22}",
                   "mcp-registry-hop-worker": "x", "mcp-registry-hop-request": "{}"}  # fmt: skip
            forged = await direct.post(internal, json=body, headers={**session_headers(session_id), **hop})
            # A time field too large for a float (it raised OverflowError: a 500 and a logged traceback).
            crafted = {**hop, "mcp-registry-hop": f"v2.{'01' * 8}.{'02' * 8}.1.{'9' * 400}.{'A' * 22}"}
            overflow = await direct.post(internal, json=body, headers={**session_headers(session_id), **crafted})

        assert (plain.status_code, forged.status_code, overflow.status_code) == (401, 403, 403)
        assert a.telemetry.metric_total(METRIC_FORWARD_REFUSED, mcp_registry__forward__refusal="missing") == 1
        assert a.telemetry.metric_total(METRIC_FORWARD_REFUSED, mcp_registry__forward__refusal="bad_tag") == 1
        assert a.telemetry.metric_total(METRIC_FORWARD_REFUSED, mcp_registry__forward__refusal="malformed") == 1


async def test_with_continuity_off_ids_are_the_sdk_s_own() -> None:
    server = MCPServer("off")
    app = SessionRegistryMiddleware(
        server.streamable_http_app(json_response=True), session_manager=server.session_manager,
        config=RegistryConfig(worker_id="w", hash_key=KEY),
    )
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            session_id = await open_session(client)

    assert len(session_id) == 32
    assert int(session_id, 16) >= 0
    assert app.continuity is None


async def test_a_session_opened_before_the_listener_runs_keeps_the_sdk_s_id() -> None:
    worker = Worker("worker-a")
    assert worker.app.continuity is not None

    assert worker.app.continuity.seal("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    with anyio.fail_after(5):
        async with worker.running() as client:
            assert (await open_session(client)).count(".") == 2


async def test_a_listen_address_that_cannot_be_bound_fails_start_up_naming_the_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        worker = Worker("worker-a", forward_listen=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(RuntimeError, match=r"MCP_SESSION_FORWARD_LISTEN: cannot listen on 127\.0\.0\.1:"):
            async with worker.running():
                pass


# --- hop hardening (issue 20) ------------------------------------------------------------------------
async def test_the_owner_sees_the_request_the_client_sent() -> None:
    """Finding 5: the owner's app saw a rebuilt request (no lifespan state, the forwarder's address, its
    scheme); finding 7: header bytes outside ASCII changed on the way (latin-1 arrived as UTF-8)."""
    a, b = Worker("worker-a"), Worker("worker-b")
    async with AsyncExitStack() as stack:
        client_a = await stack.enter_async_context(a.running())
        client_b = await stack.enter_async_context(b.running(client_address=("203.0.113.7", 4242), scheme="https"))
        session_id = await open_session(client_a)
        headers = [(k.encode(), v.encode()) for k, v in session_headers(session_id).items()]
        headers.append((b"x-label", "caf\u00e9".encode("latin-1")))

        response = await client_b.post("/mcp?trace=on&x=%C3%A9", json=tool_call("seen", {}), headers=headers)

    assert response.status_code == 200
    seen = json.loads(response.json()["result"]["content"][0]["text"])
    assert seen == {
        "worker": "worker-a",  # served by the owner, after a hop
        "client": ["203.0.113.7", 4242],  # the client's address, not the forwarding worker's
        "scheme": "https",
        "pool": "pool-of-worker-a",  # the owner app's own lifespan state
        "label": ["636166e9"],  # b"caf\xe9", byte for byte
        "query": "trace=on&x=%C3%A9",
    }


async def test_a_route_outside_the_peers_is_fabricated_and_never_dialled() -> None:
    """Finding 1: with the deployment key, a client sealed any address and a worker dialled it."""
    stranger_dialled: list[object] = []

    async def stranger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stranger_dialled.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(stranger, "127.0.0.3", 0)
    port = server.sockets[0].getsockname()[1]
    a = Worker("worker-a", forward_listen="127.0.0.2:0", forward_peers="127.0.0.2/32")
    try:
        async with a.running() as client_a:
            assert a.app.continuity is not None
            assert a.app.continuity.route is not None
            # What a client holding the key could make: a valid seal naming a stranger's address.
            sdk_id = (await open_session(client_a)).split(".")[0]
            route = Route(f"127.0.0.3:{port}", b"\x07" * 8)
            forged = a.app.continuity.sealer.seal(sdk_id + "0", route)

            response = await whoami(client_a, forged)
    finally:
        server.close()
        await server.wait_closed()

    assert response.status_code == 404
    assert stranger_dialled == []
    [span] = a.telemetry.spans()
    assert dict(span.attributes or {})[ATTR_STATUS] == "fabricated"
    assert dict(span.attributes or {})[ATTR_ACTION] == "reject"


async def test_a_404_from_the_owner_s_router_is_never_counted_as_served() -> None:
    """Finding 6: with the path set explicitly, the owner's router answered 404 while metrics said served."""
    async with running_pair() as (_, client_a, b, client_b):
        session_id = await open_session(client_a)
        b.app.paths = frozenset({"/mcp", "/elsewhere"})  # an operator's MCP_SESSION_REGISTRY_PATH

        response = await client_b.post("/elsewhere", json=tool_call("whoami", {}), headers=session_headers(session_id))

    assert response.status_code == 404
    assert b.telemetry.metric_total(METRIC_FORWARD_FAILURES, mcp_registry__forward__failure="not_routed") == 1
    assert b.telemetry.metric_total(METRIC_REUSE) == 0


async def test_an_owner_restarted_at_its_address_gives_a_prompt_404_not_a_502() -> None:
    """A deploy or a crash and restart: a new process listens where the owner did. Its sessions are gone with
    it; the client must get the spec's 404 (and start over) at once — it got 502 on every request."""
    [port] = free_ports(1, "127.0.0.2")
    listen = f"127.0.0.2:{port}"
    b = Worker("worker-b")
    async with b.running() as client_b:
        async with Worker("worker-a", forward_listen=listen).running() as client_a:
            session_id = await open_session(client_a)
            assert (await whoami(client_b, session_id)).status_code == 200
        restarted = Worker("worker-a", forward_listen=listen)
        async with restarted.running():
            started = time.monotonic()
            answers = [(await whoami(client_b, session_id)).status_code for _ in range(3)]
            took = time.monotonic() - started

    assert answers == [404, 404, 404]
    assert took < 3, "prompt: no timeout on the way"
    assert b.telemetry.metric_total(METRIC_FORWARD_FAILURES, mcp_registry__forward__failure="owner_gone") == 3
    assert restarted.telemetry.metric_total(METRIC_FORWARD_REFUSED, mcp_registry__forward__refusal="not_here") == 3
    last = dict(b.telemetry.spans()[-1].attributes or {})
    assert (last[ATTR_STATUS], last[ATTR_END_REASON]) == ("expired", "worker_lost")
