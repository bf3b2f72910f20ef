"""Counting per client on a worker, as the migration view needs it: no body read and no Redis per request."""

from __future__ import annotations

import httpx
from mcp.server.mcpserver import MCPServer

from mcp_registry import RegistryConfig, SessionRegistryMiddleware
from mcp_registry.telemetry import METRIC_CLIENT_REQUESTS
from mcp_registry.testing import capture_telemetry, initialize_request, lifespan, session_headers, tool_call

MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream",
          "content-type": "application/json"}  # fmt: skip


def app() -> SessionRegistryMiddleware:
    server = MCPServer("per-client")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    telemetry = capture_telemetry()
    middleware = SessionRegistryMiddleware(
        server.streamable_http_app(json_response=True), config=RegistryConfig(worker_id="w"),
        meter_provider=telemetry.meter_provider,
    )
    middleware.telemetry = telemetry  # type: ignore[attr-defined]
    return middleware


async def test_requests_are_counted_per_client_and_era() -> None:
    middleware = app()
    async with lifespan(middleware), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://127.0.0.1:8000"
    ) as http:
        sessions = {}
        for name, version in (("claude-code", "2.1.4"), ("cursor", "1.7")):
            opened = await http.post("/mcp", json=initialize_request(name, version), headers=session_headers(None))
            sessions[name] = opened.headers["mcp-session-id"]
        call = tool_call("add", {"a": 1, "b": 2})
        for _ in range(3):
            await http.post("/mcp", json=call, headers=session_headers(sessions["cursor"]))
        await http.post("/mcp", json=call, headers=session_headers(sessions["claude-code"]))
        for agent in ("agent-x/1.0 (linux)", "agent-x/1.0", "agent-y/2.1"):
            await http.post("/mcp", json=call, headers={**MODERN, "user-agent": agent})

        middleware.runtime.fold_client_counts()  # what the runtime does every second

    assert middleware.runtime.stats.client_requests == {
        ("legacy", "claude-code", "2.1.4"): 1,
        ("legacy", "cursor", "1.7"): 3,
        ("modern", "agent-x", "1.0"): 2,
        ("modern", "agent-y", "2.1"): 1,
    }
    assert middleware.runtime.stats.session_requests == {}, "folded, so it never grows"
    telemetry = middleware.telemetry  # type: ignore[attr-defined]
    assert telemetry.metric_total(METRIC_CLIENT_REQUESTS, mcp_registry__client__name="cursor") == 3


async def test_a_flood_of_made_up_user_agents_is_bounded() -> None:
    middleware = app()
    async with lifespan(middleware), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://127.0.0.1:8000"
    ) as http:
        call = tool_call("add", {"a": 1, "b": 2})
        for i in range(300):
            await http.post("/mcp", json=call, headers={**MODERN, "user-agent": f"x{i}/1"})

    counted = middleware.runtime.stats.client_requests
    assert len(counted) == 256
    assert counted[("modern", "other", "other")] == 300 - 255
