"""mcp_registry: make multi-worker MCP servers observable and keep legacy sessions from breaking silently.

Wrap the SDK's Streamable HTTP app::

    server = MCPServer("demo")
    app = SessionRegistryMiddleware(server.streamable_http_app())   # finds server.session_manager

Configuration comes from `RegistryConfig` (or the `MCP_SESSION_*` variables when `config` is None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_registry.adoption import Adoption
from mcp_registry.config import RegistryConfig
from mcp_registry.env import ConfigError
from mcp_registry.outcomes import StalePolicy

if TYPE_CHECKING:
    from mcp_registry.handler import SessionRegistryMiddleware

__all__ = ["Adoption", "ConfigError", "RegistryConfig", "SessionRegistryMiddleware", "StalePolicy"]


def __getattr__(name: str) -> Any:
    # The middleware pulls in the MCP SDK; the audit CLI, which imports this package, does not need it.
    if name == "SessionRegistryMiddleware":
        from mcp_registry.handler import SessionRegistryMiddleware

        return SessionRegistryMiddleware
    raise AttributeError(f"module 'mcp_registry' has no attribute {name!r}")
