"""Takeover in process: workers of one deployment (real internal listeners, a real redis-server) adopt the
sessions of a worker that is gone — or refuse to, and say so. `MCP_SESSION_CONTINUITY=adopt`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from redis.asyncio import Redis

from mcp_registry import Adoption, RegistryConfig, SessionRegistryMiddleware
from mcp_registry.adoption import OnAdopted
from mcp_registry.config import Continuity
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.outcomes import AdoptReason
from mcp_registry.registry import key_schema
from mcp_registry.telemetry import ATTR_ACTION, ATTR_STATUS, METRIC_ADOPTED, METRIC_TAKEOVER_FAILURES
from mcp_registry.testing import (
    LEGACY_VERSION,
    CapturedTelemetry,
    capture_telemetry,
    initialize_request,
    lifespan,
    session_headers,
    tool_call,
)

pytestmark = pytest.mark.integration

KEY = b"Qm3r8Zt0uXbYv2cN5kLp7dHsGf1aJ9wEeRiToPyUqW4"
PREFIX = "takeover"


class Tokens:
    async def verify_token(self, token: str) -> AccessToken | None:
        principals = {"alice-token": "alice", "bob-token": "bob"}
        return AccessToken(token=token, client_id=principals[token], scopes=[]) if token in principals else None


class Worker:
    """One worker of the deployment: the demo-like app (`whoami`, `count`) wrapped with takeover on."""

    def __init__(self, name: str, redis_url: str, *, auth: bool = False, on_adopted: OnAdopted | None = None) -> None:
        settings = AuthSettings(issuer_url=AnyHttpUrl("https://auth.example"),
                                resource_server_url=AnyHttpUrl("http://127.0.0.1:8000/mcp"),
                                validate_token_resource=False)  # fmt: skip
        server = MCPServer(name, token_verifier=Tokens(), auth=settings) if auth else MCPServer(name)
        calls: dict[str, int] = {}
        self.served: list[str] = []

        @server.tool()
        def whoami() -> str:
            self.served.append("whoami")
            return name

        @server.tool()
        def count() -> int:
            calls["n"] = calls.get("n", 0) + 1
            return calls["n"]

        self.name = name
        self.telemetry: CapturedTelemetry = capture_telemetry()
        self.app = SessionRegistryMiddleware(
            server.streamable_http_app(json_response=True),
            config=RegistryConfig(
                worker_id=name, hash_key=KEY, continuity=Continuity.ADOPT, enabled=True, url=redis_url,
                prefix=PREFIX, refresh_seconds=1.0, forward_listen="127.0.0.1:0",
            ),
            tracer_provider=self.telemetry.tracer_provider, meter_provider=self.telemetry.meter_provider,
            on_adopted=on_adopted,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[httpx.AsyncClient]:
        async with lifespan(self.app):
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=10) as client:
                yield client


def with_token(token: str | None, session_id: str | None = None) -> dict[str, str]:
    headers = session_headers(session_id)
    return headers if token is None else {**headers, "authorization": f"Bearer {token}"}


async def open_session(client: httpx.AsyncClient, token: str | None = None) -> str:
    response = await client.post("/mcp", json=initialize_request("takeover-test", "1.0"), headers=with_token(token))
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


async def call(
    client: httpx.AsyncClient, session_id: str, tool: str = "whoami", token: str | None = None, request_id: int = 2
) -> Any:
    body = tool_call(tool, {}, request_id=request_id)
    return await client.post("/mcp", json=body, headers=with_token(token, session_id))


def text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["content"][0]["text"])


async def stored(redis_url: str, worker: Worker, session_id: str) -> None:
    """Wait (bounded) until the session's live key, with its handshake, is in Redis."""
    h = worker.app.runtime.hasher.hash(session_id)
    assert h is not None
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        with anyio.fail_after(10):
            while not isinstance(value := await redis.get(key_schema.KeySchema(PREFIX).session(h)), str) or (
                key_schema.parse_takeover(value) is None
            ):
                await anyio.sleep(0.02)


@pytest.fixture
def redis(redis_server: RedisServer) -> str:
    return redis_server.url


async def a_session_whose_owner_stopped(redis: str) -> str:
    """A session opened on worker-a, its handshake stored, and worker-a shut down (as on SIGTERM)."""
    a = Worker("worker-a", redis)
    async with a.running() as client_a:
        session_id = await open_session(client_a)
        await stored(redis, a, session_id)
    return session_id


async def test_a_session_whose_owner_is_gone_is_adopted_under_the_same_id(redis: str) -> None:
    b = Worker("worker-b", redis)
    async with b.running() as client_b:
        a = Worker("worker-a", redis)
        async with a.running() as client_a:
            session_id = await open_session(client_a)
            assert text(await call(client_a, session_id, "count")) == "1"
            await stored(redis, a, session_id)
        # worker-a has shut down (a deploy): its sessions were handed over, not ended

        first = await call(client_b, session_id)
        again = await call(client_b, session_id, "count")

    assert text(first) == "worker-b", "adopted: the request is served by the worker that took the session over"
    assert first.headers["mcp-session-id"] == session_id, "under the id the client holds"
    assert text(again) == "1", "state in the old process's memory does not move (documented)"
    adopt = [dict(s.attributes or {}) for s in b.telemetry.spans() if (s.attributes or {}).get(ATTR_ACTION) == "adopt"]
    assert [(s[ATTR_STATUS]) for s in adopt] == ["cross_worker"]
    assert b.telemetry.metric_total(METRIC_ADOPTED, mcp_registry__takeover__reason="owner_gone") == 1


async def test_the_application_learns_of_an_adoption_before_the_request_is_served(redis: str) -> None:
    told: list[Adoption] = []

    async def reload_state(adoption: Adoption) -> None:
        told.append(adoption)
        b.served.append("hook")  # (where an application reloads the session's state from its own store)

    b = Worker("worker-b", redis, on_adopted=reload_state)
    async with b.running() as client_b:
        session_id = await a_session_whose_owner_stopped(redis)
        first = await call(client_b, session_id)
        later = [await call(client_b, session_id, request_id=n) for n in (3, 4)]

    assert [text(r) for r in (first, *later)] == ["worker-b"] * 3
    assert told == [Adoption(session_id=session_id, reason=AdoptReason.OWNER_GONE, previous_owner="worker-a",
                             protocol_version=LEGACY_VERSION, client_name="takeover-test",
                             client_version="1.0")]  # fmt: skip
    assert b.served == ["hook", "whoami", "whoami", "whoami"], "once, before the adopted session's first request"


async def test_a_hook_that_raises_never_fails_the_request(redis: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(adoption: Adoption) -> None:
        raise RuntimeError("the application's store is down")

    b = Worker("worker-b", redis, on_adopted=broken)
    async with b.running() as client_b:
        session_id = await a_session_whose_owner_stopped(redis)
        response = await call(client_b, session_id)

    assert text(response) == "worker-b"
    assert "on_adopted hook raised" in caplog.text
    assert session_id not in caplog.text, "a session id is a secret: never logged"


async def test_a_third_worker_forwards_to_the_adopter_after_one_registry_read(redis: str) -> None:
    b, c = Worker("worker-b", redis), Worker("worker-c", redis)
    async with AsyncExitStack() as stack:
        client_b = await stack.enter_async_context(b.running())
        client_c = await stack.enter_async_context(c.running())
        session_id = await a_session_whose_owner_stopped(redis)
        assert text(await call(client_b, session_id)) == "worker-b"

        from_c = [text(await call(client_c, session_id)) for _ in range(3)]

    assert from_c == ["worker-b"] * 3, "the adopter serves it from any worker"
    assert c.telemetry.metric_total(METRIC_ADOPTED) == 0
    assert c.app.continuity is not None
    assert c.app.continuity.successor(session_id) is not None, "remembered: no Redis read per request"


async def test_two_workers_adopting_at_once_make_one_owner(redis: str) -> None:
    b, c = Worker("worker-b", redis), Worker("worker-c", redis)
    async with AsyncExitStack() as stack:
        client_b = await stack.enter_async_context(b.running())
        client_c = await stack.enter_async_context(c.running())
        session_id = await a_session_whose_owner_stopped(redis)
        answers: list[str] = []

        async def request(client: httpx.AsyncClient, request_id: int) -> None:
            # (one session, requests in flight at once: each with its own JSON-RPC id, as a client sends them)
            answers.append(text(await call(client, session_id, request_id=request_id)))

        async with anyio.create_task_group() as tg:
            for request_id, client in enumerate((client_b, client_c, client_b, client_c), start=10):
                tg.start_soon(request, client, request_id)
        holders = [w.name for w in (b, c) if session_id in w.app._live]

    assert len(answers) == 4
    assert len(set(answers)) == 1, f"one owner: {answers}"
    adopted = b.telemetry.metric_total(METRIC_ADOPTED) + c.telemetry.metric_total(METRIC_ADOPTED)
    assert adopted == 1
    assert holders == answers[:1], "one worker holds the session: the one that answers"


async def test_a_deleted_session_is_never_brought_back(redis: str) -> None:
    b = Worker("worker-b", redis)
    async with b.running() as client_b:
        a = Worker("worker-a", redis)
        async with a.running() as client_a:
            session_id = await open_session(client_a)
            await stored(redis, a, session_id)
            assert (await client_a.delete("/mcp", headers=session_headers(session_id))).status_code == 200
            h = a.app.runtime.hasher.hash(session_id)
            assert h is not None
            async with Redis.from_url(redis, decode_responses=True) as r:
                with anyio.fail_after(10):
                    while not await r.exists(key_schema.KeySchema(PREFIX).tombstone(h)):
                        await anyio.sleep(0.02)

        response = await call(client_b, session_id)

    assert response.status_code == 404
    assert b.telemetry.metric_total(METRIC_ADOPTED) == 0
    assert b.telemetry.metric_total(METRIC_TAKEOVER_FAILURES, mcp_registry__takeover__failure="ended") == 1


async def test_an_altered_id_is_never_adopted(redis: str) -> None:
    b = Worker("worker-b", redis)
    async with b.running() as client_b:
        a = Worker("worker-a", redis)
        async with a.running() as client_a:
            sdk_id, label, sealed = (await open_session(client_a)).split(".")
            await stored(redis, a, f"{sdk_id}.{label}.{sealed}")
        altered = f"{sdk_id}.{label}.{sealed[:-4]}{'BBBB' if sealed.endswith('AAAA') else 'AAAA'}"

        response = await call(client_b, altered)

    assert response.status_code == 404
    assert b.telemetry.metric_total(METRIC_ADOPTED) == 0
    assert [dict(s.attributes or {})[ATTR_STATUS] for s in b.telemetry.spans()] == ["fabricated"]


async def test_only_the_principal_that_opened_a_session_can_adopt_it(redis: str) -> None:
    b = Worker("worker-b", redis, auth=True)
    async with b.running() as client_b:
        a = Worker("worker-a", redis, auth=True)
        async with a.running() as client_a:
            session_id = await open_session(client_a, "alice-token")
            await stored(redis, a, session_id)

        as_bob = await call(client_b, session_id, token="bob-token")
        as_alice = await call(client_b, session_id, token="alice-token")
        bob_again = await call(client_b, session_id, token="bob-token")

    assert as_bob.status_code == 404, "as the SDK's own credential binding answers"
    assert b.telemetry.metric_total(METRIC_TAKEOVER_FAILURES, mcp_registry__takeover__failure="principal_mismatch") == 1
    assert text(as_alice) == "worker-b"
    assert bob_again.status_code == 404, "the adopted session keeps its binding"


async def test_without_redis_the_answer_is_a_prompt_retryable_503(redis_server: RedisServer) -> None:
    b = Worker("worker-b", redis_server.url)
    async with b.running() as client_b:
        a = Worker("worker-a", redis_server.url)
        async with a.running() as client_a:
            session_id = await open_session(client_a)
            await stored(redis_server.url, a, session_id)
        redis_server.pause()
        try:
            with anyio.fail_after(5):
                response = await call(client_b, session_id)
        finally:
            redis_server.resume()
        after = await call(client_b, session_id)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert b.telemetry.metric_total(
        METRIC_TAKEOVER_FAILURES, mcp_registry__takeover__failure="registry_unavailable"
    ) == 1
    assert text(after) == "worker-b", "the client's next try adopts it"
