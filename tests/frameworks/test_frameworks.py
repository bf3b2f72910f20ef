"""Each supported framework line, wrapped as `SessionRegistryMiddleware(app)`, against real servers.

Per line (the ones this virtualenv has; `noxfile.py` runs this module in one virtualenv per line,
on the newest release of each): two "workers" of the app as its framework's docs build it, each
wrapped with no `session_manager=` and served by a real uvicorn on its own loopback address,
sharing a real redis-server. What a user would check:

- initialize, then a call on the session → 200 (the manager was found, also when the framework
  creates it in the app's lifespan, also behind FastMCP's auth);
- a made-up id → the SDK's 404, its DELETE → 200 from us, a malformed id → 404: each classified;
- the session hopped to the second worker → 404 and `cross_worker`, origin the first worker;
- the session deleted, then used again → 404 and `expired`;
- the session's key is in Redis under its hash; the spans carry the registry's attributes;
- a second lifespan cycle (FastMCP replaces its manager) is followed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx
import pytest
import redis.asyncio

from mcp_registry import RegistryConfig, SessionRegistryMiddleware
from mcp_registry.config import Continuity
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ConfigError
from mcp_registry.registry import hasher, key_schema
from mcp_registry.telemetry import ATTR_ACTION, ATTR_ID_HASH, ATTR_ORIGIN_WORKER, ATTR_STATUS, ATTR_WORKER_ID
from mcp_registry.testing import (
    CapturedTelemetry,
    capture_telemetry,
    initialize_request,
    serve,
    session_headers,
    tool_call,
)
from tests.frameworks.apps import Framework, available

pytestmark = pytest.mark.integration

FRAMEWORKS = available()
EXPECTED_ENV = "MCP_REGISTRY_FRAMEWORKS"
"""Set by the nox sessions: the lines this virtualenv must have (a missing one fails, never skips)."""
PREFIX = "compat"
HASH_KEY = b"sjAXjHFoY-qHdY-c3RYAhTprnY_iacloA3pcqPcG0xg"


def test_the_lines_this_virtualenv_was_made_for_are_all_here() -> None:
    expected = {name for name in os.environ.get(EXPECTED_ENV, "").split(",") if name}
    present = {f.name for f in FRAMEWORKS} | ({"litellm"} if importlib.util.find_spec("litellm") else set())
    assert expected <= present


@asynccontextmanager
async def workers(
    framework: Framework, redis_url: str, captured: CapturedTelemetry
) -> AsyncIterator[tuple[list[SessionRegistryMiddleware], list[str]]]:
    apps = [
        SessionRegistryMiddleware(
            framework.build(),
            config=RegistryConfig(enabled=True, url=redis_url, prefix=PREFIX, worker_id=f"worker-{i}",
                                  hash_key=HASH_KEY, refresh_seconds=1),
            tracer_provider=captured.tracer_provider,
            meter_provider=captured.meter_provider,
        )
        for i in range(2)
    ]
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(app, host=f"127.0.0.{2 + i}")) for i, app in enumerate(apps)]
        yield apps, urls


def statuses(captured: CapturedTelemetry, worker: str) -> list[tuple[str, str | None]]:
    found = []
    for span in captured.spans():
        attributes = span.attributes or {}
        if attributes.get(ATTR_WORKER_ID) == worker and ATTR_STATUS in attributes:
            origin = attributes.get(ATTR_ORIGIN_WORKER)
            found.append((str(attributes[ATTR_STATUS]), None if origin is None else str(origin)))
    return found


async def until_classified(captured: CapturedTelemetry, worker: str, count: int) -> list[tuple[str, str | None]]:
    with anyio.fail_after(10):
        while len(found := statuses(captured, worker)) < count:
            await anyio.sleep(0.05)
    return found


@pytest.mark.parametrize("framework", FRAMEWORKS, ids=[f.name for f in FRAMEWORKS])
async def test_a_framework_app_wrapped_as_it_is(framework: Framework, redis_server: RedisServer) -> None:
    captured = capture_telemetry()
    call = tool_call("add", {"a": 1, "b": 2})
    for cycle in range(framework.lifespan_cycles):
        if cycle:
            captured = capture_telemetry()
        async with workers(framework, redis_server.url, captured) as (apps, (url_a, url_b)), httpx.AsyncClient(
            timeout=15, headers=framework.headers
        ) as http:
            opened = await http.post(f"{url_a}/mcp", json=initialize_request("compat"), headers=session_headers(None))
            assert opened.status_code == 200, opened.text
            session_id = opened.headers["mcp-session-id"]
            own = await http.post(f"{url_a}/mcp", json=call, headers=session_headers(session_id))
            assert own.status_code == 200
            assert '"text":"3"' in own.text.replace(" ", "")

            made_up = await http.post(f"{url_a}/mcp", json=call, headers=session_headers("made-up-0123456789"))
            assert made_up.status_code == 404
            deleted = await http.delete(f"{url_a}/mcp", headers=session_headers("made-up-0123456789"))
            assert deleted.status_code == 200
            malformed = await http.post(f"{url_a}/mcp", json=call, headers=session_headers("not a valid id"))
            assert malformed.status_code == 404
            assert sorted(await until_classified(captured, "worker-0", 3)) == [
                ("fabricated", None), ("fabricated", None), ("malformed", None),
            ]

            h = hasher.id_hash(HASH_KEY, session_id)
            async with redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True) as r:
                with anyio.fail_after(10):
                    while await r.get(key_schema.KeySchema(PREFIX).session(h)) != "worker-0|compat|1.0":
                        await anyio.sleep(0.05)
            hopped = await http.post(f"{url_b}/mcp", json=call, headers=session_headers(session_id))
            assert hopped.status_code == 404
            assert await until_classified(captured, "worker-1", 1) == [("cross_worker", "worker-0")]

            hop_span = next(s for s in captured.spans() if (s.attributes or {}).get(ATTR_WORKER_ID) == "worker-1")
            assert (hop_span.attributes or {}).get(ATTR_ID_HASH) == h  # the same keyed hash on both workers
            assert apps[0].runtime.stats.local_requests >= 1

            ended = await http.delete(f"{url_a}/mcp", headers=session_headers(session_id))
            assert ended.status_code == 200
            async with redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True) as r:
                with anyio.fail_after(10):  # its tombstone is written
                    while not await r.exists(key_schema.KeySchema(PREFIX).tombstone(h)):
                        await anyio.sleep(0.05)
            after_end = await http.post(f"{url_a}/mcp", json=call, headers=session_headers(session_id))
            assert after_end.status_code == 404
            assert (await until_classified(captured, "worker-0", 4))[-1:] == [("expired", "worker-0")]


def _continuity_supported() -> bool:
    """Continuity (and so takeover) needs mcp >= 1.29: its manager admits sessions in one place."""
    major, minor = (int(part) for part in importlib.metadata.version("mcp").split(".")[:2])
    return (major, minor) >= (1, 29)


@pytest.mark.parametrize("framework", FRAMEWORKS, ids=[f.name for f in FRAMEWORKS])
async def test_a_session_whose_worker_stopped_is_adopted_on_every_line(
    framework: Framework, redis_server: RedisServer
) -> None:
    """`MCP_SESSION_CONTINUITY=adopt` on each supported line: worker-0 opens a session and stops (its lifespan
    ends, as on SIGTERM); the session's next request reaches worker-1, which takes it over under the same id."""
    captured = capture_telemetry()

    def worker(i: int) -> SessionRegistryMiddleware:
        return SessionRegistryMiddleware(
            framework.build(),
            config=RegistryConfig(enabled=True, url=redis_server.url, prefix=f"{PREFIX}-adopt", worker_id=f"worker-{i}",
                                  hash_key=HASH_KEY, refresh_seconds=1, continuity=Continuity.ADOPT,
                                  forward_listen=f"127.0.0.{2 + i}:0"),
            tracer_provider=captured.tracer_provider, meter_provider=captured.meter_provider,
        )  # fmt: skip

    if not _continuity_supported():
        with pytest.raises((ConfigError, RuntimeError), match=r"mcp >= 1\.29"):
            async with serve(worker(0), host="127.0.0.2"):
                pass
        return
    call = tool_call("add", {"a": 1, "b": 2})
    opening = initialize_request("compat")
    async with httpx.AsyncClient(timeout=15, headers=framework.headers) as http, serve(
        worker(1), host="127.0.0.3"
    ) as url_b:
        async with serve(worker(0), host="127.0.0.2") as url_a:
            opened = await http.post(f"{url_a}/mcp", json=opening, headers=session_headers(None))
            assert opened.status_code == 200, opened.text
            session_id = opened.headers["mcp-session-id"]
            own = await http.post(f"{url_a}/mcp", json=call, headers=session_headers(session_id))
            assert own.status_code == 200
            key = key_schema.KeySchema(f"{PREFIX}-adopt").session(hasher.id_hash(HASH_KEY, session_id))
            async with redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True) as r:
                with anyio.fail_after(10):  # its handshake is stored
                    while not isinstance(value := await r.get(key), str) or key_schema.parse_takeover(value) is None:
                        await anyio.sleep(0.05)
        adopted = await http.post(f"{url_b}/mcp", json=call, headers=session_headers(session_id))
        again = await http.post(f"{url_b}/mcp", json=call, headers=session_headers(session_id))

    assert adopted.status_code == 200, adopted.text
    assert '"text":"3"' in adopted.text.replace(" ", "")
    assert again.status_code == 200
    assert any((s.attributes or {}).get(ATTR_ACTION) == "adopt" for s in captured.spans())
