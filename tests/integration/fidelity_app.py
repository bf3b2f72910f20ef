"""An MCP app that says what it sees of the request that called its tool (the hop fidelity tests run it).

`uvicorn fidelity_app:app --app-dir tests/integration`, continuity configured by `MCP_SESSION_*`. Its
lifespan puts a `pool` into the app's state, as an application with a database pool does.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from mcp_registry import SessionRegistryMiddleware

WORKER = os.environ.get("MCP_SESSION_REGISTRY_WORKER_ID", "unnamed")
server = MCPServer("fidelity")


@server.tool()
def seen(ctx: Context) -> str:
    """What the application sees of the request that called it."""
    request = ctx.request_context.request
    assert isinstance(request, Request)
    return json.dumps({
        "worker": WORKER,
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "root_path": request.scope.get("root_path"),
        "pool": getattr(request.state, "pool", None),
        "label": [v.hex() for n, v in request.scope["headers"] if n == b"x-label"],
    })  # fmt: skip


async def healthz(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


inner = server.streamable_http_app(
    json_response=True, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
)
inner.add_route("/healthz", healthz, methods=["GET"])
_opening = inner.router.lifespan_context


@asynccontextmanager
async def _with_a_pool(app: Any) -> AsyncIterator[dict[str, str]]:
    async with _opening(app):
        yield {"pool": f"pool-of-{WORKER}"}


inner.router.lifespan_context = _with_a_pool
app = SessionRegistryMiddleware(inner)
