"""Pins the SDK behaviour `mcp_registry._sdk.ManagerView` relies on.

If an SDK release changes where or when it keeps live sessions, these tests fail first, with
a message that says what changed.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from mcp_registry._sdk import (
    DEFAULT_BODY_LIMIT,
    HANDSHAKE_PROTOCOL_VERSIONS,
    ManagerView,
    UnsupportedSDK,
    forget_deleted,
    issue_ids_with,
)
from mcp_registry.testing import initialize_request, lifespan, session_headers


def make_app(**kwargs: Any) -> tuple[MCPServer, Starlette]:
    server = MCPServer("sdk-pin")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    return server, server.streamable_http_app(json_response=True, **kwargs)


async def test_the_manager_holds_a_session_from_its_opening_response_until_delete() -> None:
    server, app = make_app()
    view = ManagerView.of(server.session_manager)
    async with lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        response = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        session_id = response.headers["mcp-session-id"]
        assert session_id in view.live, "the SDK no longer keeps live sessions in _server_instances"
        await client.delete("/mcp", headers=session_headers(session_id))
        assert session_id not in view.live, "the SDK keeps a deleted session in _server_instances"


async def test_the_manager_forgets_a_session_after_its_idle_timeout() -> None:
    server, app = make_app(session_idle_timeout=0.1)
    view = ManagerView.of(server.session_manager)
    async with lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        response = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        session_id = response.headers["mcp-session-id"]
        with anyio.fail_after(5):
            while session_id in view.live:
                await anyio.sleep(0.02)


def test_the_view_reads_mode_and_body_limit() -> None:
    server, _ = make_app(stateless_http=True, max_request_body_size=1234)
    view = ManagerView.of(server.session_manager)
    assert view.stateless is True
    assert view.max_body_bytes == 1234


class OlderManager:
    """What a 1.26-1.28 manager lacks: a body limit of its own and a single admission hook."""

    def __init__(self) -> None:
        self._server_instances: dict[str, object] = {}
        self.stateless = False


def test_an_sdk_without_a_body_limit_gets_our_bound_and_refuses_continuity() -> None:
    manager: Any = OlderManager()
    assert ManagerView.of(manager).max_body_bytes == DEFAULT_BODY_LIMIT
    with pytest.raises(UnsupportedSDK, match=r"mcp >= 1\.29"):
        issue_ids_with(manager, lambda sdk_id: sdk_id)


def test_the_handshake_revisions_are_the_legacy_ones() -> None:
    assert "2025-11-25" in HANDSHAKE_PROTOCOL_VERSIONS
    assert "2026-07-28" not in HANDSHAKE_PROTOCOL_VERSIONS


def test_a_deleted_session_is_forgotten_where_the_sdk_would_keep_it() -> None:
    older: Any = OlderManager()
    older._server_instances["gone"] = object()
    forget_deleted(older, "gone")
    assert "gone" not in older._server_instances

    server, _ = make_app()
    current = server.session_manager
    current._server_instances["kept-by-its-own-rules"] = object()  # type: ignore[assignment]
    forget_deleted(current, "kept-by-its-own-rules")  # 2.x forgets by itself: we leave its table alone
    assert "kept-by-its-own-rules" in current._server_instances
