"""The stale-session handler around the real SDK app, in process (registry off: no Redis here).

Each test drives real HTTP requests through the real SDK session manager and asserts what a
client or an operator sees: status codes, session ids, and our spans and metrics.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from mcp_registry import ConfigError, RegistryConfig, SessionRegistryMiddleware
from mcp_registry.outcomes import StalePolicy
from mcp_registry.telemetry import (
    ATTR_ACTION,
    ATTR_ID_HASH,
    ATTR_LEGITIMATE,
    ATTR_RAW_SESSION_ID,
    ATTR_STATUS,
    ATTR_WORKER_ID,
    METRIC_LOOKUPS,
    METRIC_REQUESTS,
    METRIC_SESSION_DURATION,
    METRIC_SESSIONS_CREATED,
    METRIC_SESSIONS_ENDED,
)
from mcp_registry.testing import (
    MODERN_VERSION,
    CapturedTelemetry,
    capture_telemetry,
    initialize_request,
    lifespan,
    session_headers,
    tool_call,
)

HASH_KEY = b"ZWeQ9XOeLh4Kl5k5j8PJqBCpXXcOl0sfPtwiB6ITN3g"


def build_app(
    *, stateless: bool = False, idle_timeout: float | None = None, **config: Any
) -> tuple[SessionRegistryMiddleware, CapturedTelemetry]:
    server = MCPServer("handler-test")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    kwargs: dict[str, Any] = {"json_response": True, "stateless_http": stateless}
    if idle_timeout is not None:
        kwargs["session_idle_timeout"] = idle_timeout
    inner = server.streamable_http_app(**kwargs)
    telemetry = capture_telemetry()
    middleware = SessionRegistryMiddleware(
        inner,
        session_manager=server.session_manager,
        config=RegistryConfig(worker_id="worker-a", hash_key=HASH_KEY, **config),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    return middleware, telemetry


Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def running(app: SessionRegistryMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client


async def initialize(client: httpx.AsyncClient, name: str = "test-client") -> str:
    response = await client.post("/mcp", json=initialize_request(name), headers=session_headers(None))
    assert response.status_code == 200, response.text
    session_id: str = response.headers["mcp-session-id"]
    return session_id


async def call_add(client: httpx.AsyncClient, session_id: str | None, **extra: str) -> httpx.Response:
    return await client.post(
        "/mcp", json=tool_call("add", {"a": 2, "b": 3}), headers={**session_headers(session_id), **extra}
    )


def result_text(response: httpx.Response) -> str:
    text: str = response.json()["result"]["content"][0]["text"]
    return text


async def test_a_session_works_end_to_end_on_the_worker_that_issued_it() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        session_id = await initialize(client)
        response = await call_add(client, session_id)
    assert response.status_code == 200
    assert result_text(response) == "5"
    assert telemetry.spans() == []  # own sessions make no span of ours by default
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 1
    assert telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__status="local") == 1


async def test_own_session_classification_goes_on_the_current_span() -> None:
    app, telemetry = build_app()
    tracer = telemetry.tracer_provider.get_tracer("test")
    async with running(app) as client:
        session_id = await initialize(client)
        with tracer.start_as_current_span("request"):
            await call_add(client, session_id)
    (request_span,) = telemetry.spans("request")
    assert request_span.attributes is not None
    assert request_span.attributes[ATTR_STATUS] == "local"
    assert request_span.attributes[ATTR_LEGITIMATE] is True
    assert request_span.attributes[ATTR_ID_HASH]
    assert session_id not in json.dumps(dict(request_span.attributes))


async def test_trace_local_makes_a_span_for_own_sessions() -> None:
    app, telemetry = build_app(trace_local=True)
    async with running(app) as client:
        session_id = await initialize(client)
        await call_add(client, session_id)
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_STATUS] == "local"
    assert span.attributes[ATTR_ACTION] == "pass"


async def test_stale_tool_call_gets_the_sdk_404_under_the_spec_policy() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        response = await call_add(client, "0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_ACTION] == "reject"
    assert span.attributes[ATTR_STATUS] == "unverified"  # registry off: nobody can tell
    assert ATTR_LEGITIMATE not in span.attributes
    assert span.attributes[ATTR_WORKER_ID] == "worker-a"


async def test_stale_tool_call_is_stripped_under_the_strip_policy() -> None:
    app, telemetry = build_app(stale_policy=StalePolicy.STRIP)
    async with running(app) as client:
        response = await call_add(client, "0123456789abcdef0123456789abcdef")
    # The SDK sees a request without an id: a stateful manager wants an initialize first.
    assert response.status_code == 400
    assert "Missing session ID" in response.text
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_ACTION] == "strip"


async def test_initialize_with_a_stale_id_gets_a_fresh_session() -> None:
    app, telemetry = build_app()
    stale = "0123456789abcdef0123456789abcdef"
    async with running(app) as client:
        response = await client.post("/mcp", json=initialize_request(), headers=session_headers(stale))
        assert response.status_code == 200
        fresh = response.headers["mcp-session-id"]
        assert fresh != stale
        assert result_text(await call_add(client, fresh)) == "5"
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_ACTION] == "strip"
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 1


async def test_stale_delete_is_acknowledged_without_touching_live_sessions() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        live = await initialize(client)
        response = await client.delete("/mcp", headers=session_headers("not-a-session-of-this-worker"))
        assert response.status_code == 200
        assert result_text(await call_add(client, live)) == "5"
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_ACTION] == "ack_delete"


@pytest.mark.parametrize(
    "headers",
    [
        [("mcp-session-id", "a"), ("mcp-session-id", "b")],
        [("Mcp-Session-Id", "")],
        [("mcp-session-id", "x" * 257)],
        [("mcp-session-id", "has space")],
    ],
    ids=["two-values", "empty", "too-long", "space"],
)
async def test_malformed_ids_are_classified_and_not_legitimate(headers: list[tuple[str, str]]) -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        base = session_headers(None)
        response = await client.post("/mcp", json=tool_call("add", {"a": 1, "b": 1}), headers=[*base.items(), *headers])
    assert response.status_code == 404
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_STATUS] == "malformed"
    assert span.attributes[ATTR_LEGITIMATE] is False


async def test_non_utf8_header_bytes_never_break_a_request() -> None:
    app, telemetry = build_app()
    scope_headers = [
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
        (b"mcp-session-id", b"\xff\xfe\x00\r\n"),
    ]
    body = json.dumps(tool_call("add", {"a": 1, "b": 1})).encode()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": scope_headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    async with lifespan(app):
        await app(scope, receive, send)
    assert sent[0]["status"] == 404
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_STATUS] == "malformed"


async def test_stateless_manager_strips_stale_ids_and_serves_the_call() -> None:
    app, telemetry = build_app(stateless=True)
    async with running(app) as client:
        response = await call_add(client, "id-from-another-worker")
    assert response.status_code == 200
    assert result_text(response) == "5"
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_ACTION] == "strip"


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_plain_http_without_any_session_header_works(stateless: bool) -> None:
    app, _ = build_app(stateless=stateless)
    async with running(app) as client:
        response = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        assert response.status_code == 200
        session_id = response.headers.get("mcp-session-id")
        assert (session_id is None) is stateless
        assert result_text(await call_add(client, session_id)) == "5"


async def test_a_request_without_id_that_is_refused_opens_no_session() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        response = await call_add(client, None)
    assert response.status_code == 400  # the SDK's "Missing session ID", with a throwaway id
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 0


async def test_an_oversized_stale_body_gets_the_sdk_413_and_is_not_parsed() -> None:
    app, _ = build_app()
    async with running(app) as client:
        huge = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"pad": "x" * (4 * 1024 * 1024)}}
        response = await client.post("/mcp", json=huge, headers=session_headers("stale-id"))
    assert response.status_code == 413


async def test_modern_requests_skip_session_handling_and_count_as_modern() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        await client.post(
            "/mcp",
            json=tool_call("add", {"a": 1, "b": 2}),
            headers=session_headers("ignored-by-the-sdk", protocol_version=MODERN_VERSION),
        )
        await initialize(client)
    assert telemetry.spans() == []
    assert telemetry.metric_total(METRIC_REQUESTS, mcp_registry__protocol__era="modern") == 1
    assert telemetry.metric_total(METRIC_REQUESTS, mcp_registry__protocol__era="legacy") == 1


async def test_delete_of_an_own_session_ends_it_with_its_lifetime() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        session_id = await initialize(client)
        response = await client.delete("/mcp", headers=session_headers(session_id))
        assert response.status_code == 200
        assert (await call_add(client, session_id)).status_code == 404
    assert telemetry.metric_total(METRIC_SESSIONS_ENDED, mcp_registry__session__end_reason="deleted") == 1
    assert telemetry.metric_total(METRIC_SESSION_DURATION) == 1


async def test_idle_expiry_and_shutdown_end_sessions_with_their_reasons() -> None:
    app, telemetry = build_app(idle_timeout=0.2)
    async with running(app) as client:
        await initialize(client)
        with anyio.fail_after(5):
            while telemetry.metric_total(METRIC_SESSIONS_ENDED, mcp_registry__session__end_reason="idle") < 1:
                await anyio.sleep(0.05)
        await initialize(client)  # still held at shutdown
    assert telemetry.metric_total(METRIC_SESSIONS_ENDED, mcp_registry__session__end_reason="shutdown") == 1


async def test_raw_ids_reach_spans_only_when_the_operator_opts_in() -> None:
    stale = "0123456789abcdef0123456789abcdef"
    for record_raw_id in (False, True):
        app, telemetry = build_app(record_raw_id=record_raw_id)
        async with running(app) as client:
            await call_add(client, stale)
        (span,) = telemetry.spans()
        assert span.attributes is not None
        assert (span.attributes.get(ATTR_RAW_SESSION_ID) == stale) is record_raw_id
        others = {k: v for k, v in span.attributes.items() if k != ATTR_RAW_SESSION_ID}
        assert stale not in json.dumps(others)


async def test_twenty_concurrent_calls_on_one_session_all_succeed() -> None:
    app, _ = build_app()
    async with running(app) as client:
        session_id = await initialize(client)
        results: list[str] = []

        async def one(request_id: int) -> None:
            body = tool_call("add", {"a": request_id, "b": 1}, request_id=request_id)
            response = await client.post("/mcp", json=body, headers=session_headers(session_id))
            results.append(result_text(response))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for request_id in range(100, 120):
                    tg.start_soon(one, request_id)
    assert sorted(results, key=int) == [str(i + 1) for i in range(100, 120)]


async def test_an_own_session_request_reaches_the_sdk_app_straight_from_call() -> None:
    """The hot path adds one coroutine frame: the SDK's request suspends several times, and every
    frame between uvicorn and the SDK is crossed on each resume (bench/README.md, issue 10)."""
    server = MCPServer("frames")
    inner = server.streamable_http_app(json_response=True)
    callers: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and any(name == b"mcp-session-id" for name, _ in scope["headers"]):
            callers.append(sys._getframe(1).f_code.co_qualname)
        await inner(scope, receive, send)

    app = SessionRegistryMiddleware(recording, session_manager=server.session_manager,
                                    config=RegistryConfig(worker_id="w", hash_key=HASH_KEY))
    async with running(app) as client:
        response = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        session_id = response.headers["mcp-session-id"]
        await client.post("/mcp", json=tool_call("add", {"a": 1, "b": 2}), headers=session_headers(session_id))

    assert callers == ["SessionRegistryMiddleware.__call__"]


# --- scope: an app that serves MCP beside other routes -------------------------------------------
def app_with_health_route(**config: Any) -> tuple[SessionRegistryMiddleware, CapturedTelemetry]:
    """A Starlette app with `/healthz` and the SDK's MCP app mounted under `/tools` (its endpoint: `/tools/mcp`)."""
    server = MCPServer("scoped")
    inner = server.streamable_http_app(json_response=True)

    async def healthz(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    outer = Starlette(routes=[Route("/healthz", healthz, methods=["GET", "POST"]), Mount("/tools", app=inner)],
                      lifespan=lambda _app: server.session_manager.run())
    telemetry = capture_telemetry()
    middleware = SessionRegistryMiddleware(
        outer, session_manager=server.session_manager,
        config=RegistryConfig(worker_id="worker-a", hash_key=HASH_KEY, **config),
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
    )
    return middleware, telemetry


async def test_other_routes_of_the_app_pass_untouched_and_uncounted() -> None:
    app, telemetry = app_with_health_route()
    async with running(app) as client:
        probes = [await client.get("/healthz") for _ in range(10)]
        posted = await client.post("/healthz", json=initialize_request(), headers=session_headers("made-up"))
        opened = await client.post("/tools/mcp", json=initialize_request(), headers=session_headers(None))

    assert app.paths == frozenset({"/tools/mcp", "/tools/mcp/"}), "found in the app's routes"
    assert [p.status_code for p in probes] == [200] * 10
    assert (posted.status_code, posted.text) == (200, "ok"), "a made-up id elsewhere is none of our business"
    assert opened.status_code == 200
    assert telemetry.metric_total(METRIC_REQUESTS) == 1, "only the MCP request counts"
    assert telemetry.spans() == [], "nothing was classified"
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 1


async def test_the_path_setting_wins_over_what_is_found() -> None:
    app, telemetry = app_with_health_route(paths=("/healthz",))
    async with running(app) as client:
        await client.post("/tools/mcp", json=initialize_request(), headers=session_headers(None))
        await client.get("/healthz")

    assert app.paths == frozenset({"/healthz"})
    assert telemetry.metric_total(METRIC_REQUESTS) == 1
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 0, "the MCP route was not watched"


async def test_an_app_whose_endpoint_cannot_be_found_is_watched_on_every_path() -> None:
    server = MCPServer("opaque")
    inner = server.streamable_http_app(json_response=True)

    async def opaque(scope: Any, receive: Any, send: Any) -> None:  # hides its routes
        await inner(scope, receive, send)

    app = SessionRegistryMiddleware(opaque, session_manager=server.session_manager,
                                    config=RegistryConfig(worker_id="w", hash_key=HASH_KEY))

    assert app.paths is None


# --- the `missing` class: a stateful worker asked to serve a session request with no id ----------
async def test_a_request_with_no_id_that_is_not_an_initialize_is_missing() -> None:
    app, telemetry = build_app()
    async with running(app) as client:
        opened = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        call = await client.post("/mcp", json=tool_call("add", {"a": 1, "b": 2}), headers=session_headers(None))
        stream = await client.get("/mcp", headers={**session_headers(None), "accept": "text/event-stream"})

    assert opened.status_code == 200, "an initialize without an id is how a session starts: not missing"
    assert call.status_code == 400, "the SDK's own answer: Missing session ID"
    assert stream.status_code == 400
    assert telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__status="missing") == 2
    assert telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__status="missing",
                                  mcp_registry__session__legitimate=False) == 2
    assert telemetry.spans() == []


async def test_a_stateless_worker_never_counts_a_request_as_missing() -> None:
    app, telemetry = build_app(stateless=True)
    async with running(app) as client:
        call = await client.post("/mcp", json=tool_call("add", {"a": 1, "b": 2}), headers=session_headers(None))

    assert call.status_code == 200
    assert telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__status="missing") == 0


# --- finding the session manager ---------------------------------------------------------------------
async def test_the_manager_is_found_in_the_app_when_none_is_passed() -> None:
    server = MCPServer("found")
    telemetry = capture_telemetry()
    app = SessionRegistryMiddleware(
        server.streamable_http_app(json_response=True),
        config=RegistryConfig(worker_id="w", hash_key=HASH_KEY),
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
    )
    async with running(app) as client:
        opened = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        stale = await client.post("/mcp", json=tool_call("add", {"a": 1, "b": 2}), headers=session_headers("gone"))

    assert opened.status_code == 200
    assert stale.status_code == 404
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 1, "the session of the manager it found was seen"


def test_the_manager_is_found_behind_a_mount() -> None:
    app, _ = app_with_health_route()
    found = SessionRegistryMiddleware(app.app, config=RegistryConfig(worker_id="w", hash_key=HASH_KEY))

    assert found.paths == frozenset({"/tools/mcp", "/tools/mcp/"})


def test_no_manager_found_is_a_config_error_that_says_what_to_pass() -> None:
    async def opaque(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(ConfigError, match=r"pass session_manager="):
        SessionRegistryMiddleware(opaque, config=RegistryConfig(worker_id="w"))


class ManagerMadeInLifespan:
    """An endpoint whose session manager the app creates in its lifespan, a new one each cycle, behind
    an auth-style wrapper (`.app`): the shape of FastMCP 3.x/4.x `http_app()` (tested for real in
    tests/frameworks/ against each FastMCP line)."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.session_manager: StreamableHTTPSessionManager | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.session_manager is not None
        await self.session_manager.handle_request(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.session_manager = StreamableHTTPSessionManager(app=self.server._lowlevel_server, json_response=True)
        async with self.session_manager.run():
            yield


class AuthWrapper:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def lifespan_made_app() -> tuple[Starlette, ManagerMadeInLifespan]:
    server = MCPServer("late")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    endpoint = ManagerMadeInLifespan(server)
    return Starlette(routes=[Route("/mcp", endpoint=AuthWrapper(endpoint))], lifespan=endpoint.lifespan), endpoint


async def test_a_manager_made_in_the_lifespan_is_taken_when_it_starts_and_followed_each_cycle() -> None:
    app, endpoint = lifespan_made_app()
    telemetry = capture_telemetry()
    wrapped = SessionRegistryMiddleware(
        app, config=RegistryConfig(worker_id="w", hash_key=HASH_KEY),
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
    )  # fmt: skip
    assert wrapped.paths == frozenset({"/mcp", "/mcp/"})  # found before any manager exists
    managers = []
    for _ in range(2):
        async with running(wrapped) as client:
            managers.append(endpoint.session_manager)
            opened = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
            session_id = opened.headers["mcp-session-id"]
            call = tool_call("add", {"a": 1, "b": 2})
            own = await client.post("/mcp", json=call, headers=session_headers(session_id))
            assert own.status_code == 200
    assert managers[0] is not managers[1]
    assert telemetry.metric_total(METRIC_SESSIONS_CREATED) == 2  # one per cycle, each on its own manager
    assert telemetry.metric_total(METRIC_LOOKUPS, mcp_registry__session__status="local") == 2


async def test_a_lifespan_that_makes_no_manager_fails_start_up_saying_so() -> None:
    app, endpoint = lifespan_made_app()
    wrapped = SessionRegistryMiddleware(app, config=RegistryConfig(worker_id="w"))

    @asynccontextmanager
    async def forgets(_: Starlette) -> AsyncIterator[None]:
        yield

    app.router.lifespan_context = forgets
    with pytest.raises(RuntimeError, match="still has no session manager"):
        async with lifespan(wrapped):
            pass
    assert endpoint.session_manager is None
