"""mcp_registry: make multi-worker MCP servers observable and keep legacy sessions from breaking silently.

Wrap the SDK's Streamable HTTP app::

    server = MCPServer("demo")
    app = SessionRegistryMiddleware(server.streamable_http_app(), session_manager=server.session_manager)

Configuration comes from `RegistryConfig` (or the `MCP_SESSION_*` variables when `config` is None).
"""

from mcp_registry.config import ConfigError, RegistryConfig, StalePolicy
from mcp_registry.handler import SessionRegistryMiddleware

__all__ = ["ConfigError", "RegistryConfig", "SessionRegistryMiddleware", "StalePolicy"]
