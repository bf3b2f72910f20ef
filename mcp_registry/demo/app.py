"""The demo MCP app: three tools behind `SessionRegistryMiddleware`, configured from the environment.

Tools: `add(a, b)`, `echo(text)`, `whoami()` (the id of the worker that served the call, so a
client can see its requests land on different workers), and three that need their session's
owner: `count()` (calls of `count` on this session so far: 1, 2, 3, … only if every call reaches
the same process), `countdown(steps)` (reports progress at every step) and `confirm(question)`
(asks the client through elicitation). `GET /healthz` answers 200 once the app has started.
`MCP_DEMO_STATELESS=1` builds the SDK's stateless manager instead of the stateful one;
`MCP_DEMO_JSON_RESPONSE=0` answers with SSE streams (the SDK's default) instead of JSON; every
`MCP_SESSION_*` variable configures the middleware.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Final

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mcp_registry import RegistryConfig, SessionRegistryMiddleware

ENV_STATELESS: Final = "MCP_DEMO_STATELESS"
ENV_JSON_RESPONSE: Final = "MCP_DEMO_JSON_RESPONSE"
ENV_ALLOWED_HOSTS: Final = "MCP_DEMO_ALLOWED_HOSTS"
"""Comma-separated `Host` values the SDK accepts (e.g. `balancer:*`); `*` turns its DNS-rebinding check off.
Unset: the SDK's loopback default (`127.0.0.1:*`, `localhost:*`), right for everything on one machine."""
SERVER_NAME: Final = "mcp-registry-demo"
HEALTH_PATH: Final = "/healthz"
MAX_COUNTED_SESSIONS: Final = 10_000
_TELEMETRY_MODULE: Final = "mcp_registry.demo.telemetry_setup"

logger = logging.getLogger(__name__)


def build_app(environ: Mapping[str, str] | None = None) -> SessionRegistryMiddleware:
    """Build the demo app from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    config = RegistryConfig.from_env(env)
    stateless = _flag(ENV_STATELESS, env.get(ENV_STATELESS, ""))
    json_response = _flag(ENV_JSON_RESPONSE, env.get(ENV_JSON_RESPONSE, "1"))
    _configure_telemetry(config.worker_id)

    server = demo_server(config.worker_id)
    inner = server.streamable_http_app(
        json_response=json_response, stateless_http=stateless, transport_security=_transport_security(env)
    )
    inner.add_route(HEALTH_PATH, _healthz, methods=["GET"])
    return SessionRegistryMiddleware(inner, session_manager=server.session_manager, config=config)


def demo_server(worker_id: str, name: str = SERVER_NAME) -> MCPServer:
    """The demo's MCP server and its tools (the benchmark serves the same ones)."""
    # WARNING: at INFO the SDK logs every new session with its raw id, a bearer secret.
    server = MCPServer(name, log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami() -> str:
        """The id of the worker serving this call."""
        return worker_id

    calls: dict[str, int] = {}  # per session, in this process's memory, like the SDK's own session state

    @server.tool()
    def count(ctx: Context) -> int:
        """How many times `count` was called on this session in this process, this call included."""
        request = ctx.request_context.request
        session_id = request.headers.get("mcp-session-id", "") if isinstance(request, Request) else ""
        if len(calls) >= MAX_COUNTED_SESSIONS and session_id not in calls:
            calls.clear()
        calls[session_id] = calls.get(session_id, 0) + 1
        return calls[session_id]

    @server.tool()
    async def countdown(steps: int, ctx: Context) -> str:
        """Count down from `steps`, reporting progress at every step."""
        for done in range(1, steps + 1):
            await ctx.report_progress(done, steps, f"step {done} of {steps}")
        return f"counted down {steps} steps"

    @server.tool()
    async def confirm(question: str, ctx: Context) -> str:
        """Ask the client to confirm (elicitation): the answer comes back to the process that asked."""
        result = await ctx.elicit(question, Confirmation)
        if result.action == "accept" and result.data is not None:
            return "confirmed" if result.data.ok else "refused"
        return result.action

    return server


class Confirmation(BaseModel):
    ok: bool


def _transport_security(env: Mapping[str, str]) -> TransportSecuritySettings | None:
    """Behind a proxy or in a container the Host header is not loopback: allow the configured names."""
    raw = env.get(ENV_ALLOWED_HOSTS, "").strip()
    if not raw:
        return None
    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    if hosts == ["*"]:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=[])


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"", "0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be one of 1/true/yes/on or 0/false/no/off; got {raw!r}")


def _configure_telemetry(worker_id: str) -> None:
    """Set up exporters with the optional telemetry helper, when it is installed."""
    try:
        module = importlib.import_module(_TELEMETRY_MODULE)
    except ImportError as exc:
        if exc.name != _TELEMETRY_MODULE:  # the helper exists but something it needs does not
            logger.warning("demo telemetry is off: %s", exc)
        return
    module.configure_from_env(worker_id)
