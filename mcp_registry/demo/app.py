"""The demo MCP app: three tools behind `SessionRegistryMiddleware`, configured from the environment.

Tools: `add(a, b)`, `echo(text)`, `whoami()` (the id of the worker that served the call, so a
client can see its requests land on different workers). `GET /healthz` answers 200 once the
app has started. `MCP_DEMO_STATELESS=1` builds the SDK's stateless manager instead of the
stateful one; every `MCP_SESSION_*` variable configures the middleware.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Final

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mcp_registry import RegistryConfig, SessionRegistryMiddleware

ENV_STATELESS: Final = "MCP_DEMO_STATELESS"
ENV_ALLOWED_HOSTS: Final = "MCP_DEMO_ALLOWED_HOSTS"
"""Comma-separated `Host` values the SDK accepts (e.g. `balancer:*`); `*` turns its DNS-rebinding check off.
Unset: the SDK's loopback default (`127.0.0.1:*`, `localhost:*`), right for everything on one machine."""
SERVER_NAME: Final = "mcp-registry-demo"
HEALTH_PATH: Final = "/healthz"
_TELEMETRY_MODULE: Final = "mcp_registry.demo.telemetry_setup"

logger = logging.getLogger(__name__)


def build_app(environ: Mapping[str, str] | None = None) -> SessionRegistryMiddleware:
    """Build the demo app from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    config = RegistryConfig.from_env(env)
    stateless = _flag(ENV_STATELESS, env.get(ENV_STATELESS, ""))
    _configure_telemetry(config.worker_id)

    server = demo_server(config.worker_id)
    inner = server.streamable_http_app(
        json_response=True, stateless_http=stateless, transport_security=_transport_security(env)
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

    return server


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
