"""The ASGI apps the benchmark serves, one uvicorn target each.

- `bench.apps:bare` — `MCPServer(...).streamable_http_app(json_response=True)`, nothing else.
- `bench.apps:wrapped` — the same app wrapped by `SessionRegistryMiddleware`; the registry is
  on or off per the `MCP_SESSION_*` environment (`config=None` reads it).
- `bench.apps:bare_stateless`, `bench.apps:wrapped_stateless` — the same with `stateless_http=True`.
- `bench.apps:passthrough` (and `_stateless`) — the bare app behind a pass-through ASGI middleware:
  what any middleware costs (one coroutine frame), the floor the wrapped app is compared with.

All of them carry the demo's tools and are served as users write them: SDK logging at WARNING
(the SDK logs every new session at INFO through Rich, with its raw id), the default garbage
collector, and an OpenTelemetry SDK `TracerProvider` installed with no span processor (what an
application that configured tracing has; `BENCH_TRACER=0` leaves the no-op API in place).
`BENCH_GC_FREEZE=1` runs `gc.collect(); gc.freeze()` once start-up is complete (a tuned app:
Python's full GC passes over the start-up heap then no longer set p99). The wrapped apps read
every `MCP_SESSION_*` variable (registry, continuity). Each app is built on first access, so a
worker builds only the one it serves.
"""

from __future__ import annotations

import gc
import os
import socket

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.demo.app import demo_server


class FreezeHeapAfterStartup:
    """Pass-through ASGI wrapper that runs `gc.collect(); gc.freeze()` when the lifespan start-up completes."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" or not self.enabled:
            await self.app(scope, receive, send)
            return

        async def send_after_freezing(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.collect()
                gc.freeze()
            await send(message)

        await self.app(scope, receive, send_after_freezing)


class PassThrough:
    """The smallest ASGI middleware there is: one coroutine frame, nothing else (a control for the others)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _install_tracer_provider() -> None:
    if os.environ.get("BENCH_TRACER", "1") == "0":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())


def _server() -> MCPServer:
    return demo_server(f"{socket.gethostname()}:{os.getpid()}", name="mcp-registry-bench")


def build(*, wrapped: bool, stateless: bool, passthrough: bool = False) -> ASGIApp:
    """One benchmark app: the SDK's Streamable HTTP app (JSON responses), optionally wrapped."""
    _install_tracer_provider()
    server = _server()
    app: ASGIApp = server.streamable_http_app(json_response=True, stateless_http=stateless)
    if passthrough:
        app = PassThrough(app)
    if wrapped:
        from mcp_registry import SessionRegistryMiddleware

        app = SessionRegistryMiddleware(app, session_manager=server.session_manager)
    return FreezeHeapAfterStartup(app, enabled=os.environ.get("BENCH_GC_FREEZE", "0") == "1")


_VARIANTS = {
    "bare": {"wrapped": False, "stateless": False},
    "wrapped": {"wrapped": True, "stateless": False},
    "bare_stateless": {"wrapped": False, "stateless": True},
    "passthrough": {"wrapped": False, "stateless": False, "passthrough": True},
    "passthrough_stateless": {"wrapped": False, "stateless": True, "passthrough": True},
    "wrapped_stateless": {"wrapped": True, "stateless": True},
}
_built: dict[str, ASGIApp] = {}


def __getattr__(name: str) -> ASGIApp:
    if name not in _VARIANTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        _built[name] = build(**_VARIANTS[name])
    return _built[name]
