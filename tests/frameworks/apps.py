"""MCP apps built the way each supported framework's documentation says, one tool (`add`) each.

Which of them can be built depends on what is installed: the main virtualenv has `mcp` 2.x
(`MCPServer`); the nox sessions (`noxfile.py`) add the others, one line per virtualenv.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp

TOKEN: Final = "compat-test-token"
HOSTS: Final = ["127.0.0.2:*", "127.0.0.3:*"]
"""Where the tests serve the apps: the SDK's DNS-rebinding protection must allow them (as a deployment
behind its own host names would configure it)."""


@dataclass(frozen=True, slots=True)
class Framework:
    name: str
    build: Callable[[], ASGIApp]
    headers: dict[str, str]
    """What every request carries (a bearer token when the app requires one)."""
    lifespan_cycles: int = 2
    """How many lifespan cycles one app survives (mcp 1.x's manager runs once per instance)."""


def _mcp_major() -> int:
    return int(importlib.metadata.version("mcp").split(".")[0])


def _mcpserver() -> ASGIApp:
    from mcp.server.mcpserver import MCPServer  # mcp 2.x
    from mcp.server.transport_security import TransportSecuritySettings

    server = MCPServer("compat")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    app: ASGIApp = server.streamable_http_app(transport_security=TransportSecuritySettings(allowed_hosts=HOSTS))
    return app


def _mcp1_fastmcp() -> ASGIApp:
    module: Any = importlib.import_module("mcp.server.fastmcp")  # mcp 1.x
    security: Any = importlib.import_module("mcp.server.transport_security")
    server = module.FastMCP("compat", transport_security=security.TransportSecuritySettings(allowed_hosts=HOSTS))

    @server.tool()  # type: ignore[untyped-decorator]
    def add(a: int, b: int) -> int:
        return a + b

    app: ASGIApp = server.streamable_http_app()
    return app


def _fastmcp(*, auth: bool) -> Callable[[], ASGIApp]:
    def build() -> ASGIApp:
        fastmcp: Any = importlib.import_module("fastmcp")
        verifier = None
        if auth:
            jwt: Any = importlib.import_module("fastmcp.server.auth.providers.jwt")
            verifier = jwt.StaticTokenVerifier(tokens={TOKEN: {"client_id": "compat", "scopes": []}})
        server = fastmcp.FastMCP("compat", auth=verifier)

        @server.tool  # type: ignore[untyped-decorator]
        def add(a: int, b: int) -> int:
            return a + b

        app: ASGIApp = server.http_app()
        return app

    return build


def available() -> list[Framework]:
    """Every framework line this virtualenv can build an app with."""
    found: list[Framework] = []
    if importlib.util.find_spec("mcp") is not None:
        if _mcp_major() >= 2:
            found.append(Framework("mcp2-mcpserver", _mcpserver, {}))
        else:
            found.append(Framework("mcp1-fastmcp", _mcp1_fastmcp, {}, lifespan_cycles=1))
    if importlib.util.find_spec("fastmcp") is not None:
        major = importlib.metadata.version("fastmcp").split(".")[0]
        found.append(Framework(f"fastmcp{major}", _fastmcp(auth=False), {}))
        found.append(Framework(f"fastmcp{major}-auth", _fastmcp(auth=True), {"authorization": f"Bearer {TOKEN}"}))
    return found
