"""The migration view against real workers and real clients: who still needs sessions, cell for cell.

Two hosts (`uvicorn --workers 1` on 127.0.0.6 and 127.0.0.7, the demo app, the registry on a real
redis-server, continuity off). Three legacy clients each open a session on the first host — the
official Python client (`mode="legacy"`), the TypeScript SDK client and a raw HTTP client with a
name of its own — and two sessionless (2026-07-28) clients send requests under their own
User-Agents. The raw client then sends one request to the other host, which cannot serve it: its
session is lost there. The audit's migration table must say exactly that.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, Implementation
from mcp.client.streamable_http import streamable_http_client

from mcp_registry.audit.run import read_report
from mcp_registry.demo.app import ENV_ALLOWED_HOSTS, ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.redis_cluster import wait_until
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ENV_PREFIX, ENV_REFRESH_SECONDS, ENV_REGISTRY, ENV_URL
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.integration.test_continuity_clients import ROUNDS, node_client  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

PREFIX: Final = "migration"
ADDRESSES: Final = ("127.0.0.6", "127.0.0.7")
PYTHON_CLIENT: Final = Implementation(name="py-agent", version="1.2")
PYTHON_CALLS: Final = 3
MODERN: Final = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream",
                 "content-type": "application/json"}  # fmt: skip


@contextlib.contextmanager
def two_hosts(redis_url: str) -> Iterator[tuple[UvicornHost, UvicornHost]]:
    env = {ENV_REGISTRY: "1", ENV_URL: redis_url, ENV_PREFIX: PREFIX, ENV_REFRESH_SECONDS: "1",
           ENV_JSON_RESPONSE: "1", ENV_ALLOWED_HOSTS: ",".join(f"{a}:*" for a in ADDRESSES)}  # fmt: skip
    with UvicornHost(ADDRESSES[0], workers=1, env=env) as a, UvicornHost(ADDRESSES[1], workers=1, env=env) as b:
        yield a, b


async def python_client(url: str) -> int:
    """The official client, as a user writes it; returns how many requests it sent on its session."""
    on_session = 0

    async def count(request: httpx2.Request) -> None:
        nonlocal on_session
        on_session += "mcp-session-id" in request.headers

    async with httpx2.AsyncClient(event_hooks={"request": [count]}, timeout=10) as http, Client(
        streamable_http_client(url, http_client=http), mode="legacy", client_info=PYTHON_CLIENT
    ) as client:
        for n in range(PYTHON_CALLS):
            await client.call_tool("add", {"a": n, "b": 1})
    return on_session


def test_the_audit_names_each_client_with_its_sessions_requests_and_losses(
    redis_server: RedisServer, node_client: Path  # noqa: F811 (the fixture)
) -> None:
    with two_hosts(redis_server.url) as (a, b), httpx.Client(timeout=10) as http:
        python_requests = anyio.run(python_client, f"{a.url}/mcp")
        ts = subprocess.run(["node", str(node_client), f"{a.url}/mcp", str(ROUNDS)], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
        assert ts.returncode == 0, ts.stderr

        opened = http.post(f"{a.url}/mcp", json=initialize_request("raw-probe", "0.1"), headers=session_headers(None))
        raw = opened.headers["mcp-session-id"]
        for _ in range(2):
            assert http.post(f"{a.url}/mcp", json=tool_call("add", {"a": 1, "b": 2}),
                             headers=session_headers(raw)).status_code == 200  # fmt: skip
        lost = http.post(f"{b.url}/mcp", json=tool_call("add", {"a": 1, "b": 2}), headers=session_headers(raw))
        assert lost.status_code == 404

        for agent, times in (("agent-x/1.0 (linux)", 3), ("agent-y/2.1", 2)):
            for _ in range(times):
                http.post(f"{a.url}/mcp", json=tool_call("add", {"a": 1, "b": 2}),
                          headers={**MODERN, "user-agent": agent})  # fmt: skip

        expected = {
            ("legacy", "ts-rounds", "1.0.0"): {"sessions": 1, "requests": TS_REQUESTS, "hopped": 0, "lost": 0},
            ("legacy", "py-agent", "1.2"): {"sessions": 1, "requests": python_requests, "hopped": 0, "lost": 0},
            ("legacy", "raw-probe", "0.1"): {"sessions": 1, "requests": 2, "hopped": 0, "lost": 1},
            ("modern", "agent-x", "1.0"): {"sessions": 0, "requests": 3, "hopped": 0, "lost": 0},
            ("modern", "agent-y", "2.1"): {"sessions": 0, "requests": 2, "hopped": 0, "lost": 0},
        }
        table = wait_until(lambda: migration_table(redis_server.url), lambda t: t == expected, bound=30,
                           what="the audit's migration table to show the traffic")  # fmt: skip

    assert table == expected
    assert python_requests >= PYTHON_CALLS + 1  # its calls and notifications/initialized at least


TS_REQUESTS: Final = 1 + 1 + 2 * ROUNDS + 1
"""What `rounds.mjs` sends on its session: notifications/initialized, the standalone GET stream, ROUNDS
times tools/list and tools/call, and the DELETE that ends it (its initialize carries no id yet)."""


def migration_table(redis_url: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    report = read_report(redis_url, prefix=PREFIX, since=600)
    return {
        (c.era, c.name, c.version): {"sessions": c.sessions, "requests": c.requests, "hopped": c.hopped, "lost": c.lost}
        for c in report.migration.clients
    }
