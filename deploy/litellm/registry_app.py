"""LiteLLM's proxy with mcp_registry in front of its MCP endpoint (the recipe in deploy/litellm/README.md).

Run it where you ran `litellm --config config.yaml` before::

    CONFIG_FILE_PATH=config.yaml MCP_SESSION_REGISTRY=1 MCP_SESSION_REGISTRY_URL=redis://redis:6379/0 \\
        uvicorn registry_app:app --host 0.0.0.0 --port 4000

LiteLLM (1.110) builds two SDK session managers at import and routes each MCP request to one
of them: requests with an `mcp-session-id`, and `initialize`, to the stateful one; the rest to the
stateless one. Sessions live in the stateful manager, so that is the one the registry watches.
LiteLLM serves MCP beside its LLM routes, so the registry is scoped to the MCP path: chat
completions and every other route pass untouched, uncounted, their bodies never read.
"""

from __future__ import annotations

import os

from litellm.proxy.mcp_server.server import session_manager_stateful
from litellm.proxy.proxy_server import app as litellm_app

from mcp_registry import RegistryConfig, SessionRegistryMiddleware

# LiteLLM's aggregate MCP endpoint; add `/<server>/mcp` paths you expose (comma-separated).
os.environ.setdefault("MCP_SESSION_REGISTRY_PATH", "/mcp,/mcp/")

app = SessionRegistryMiddleware(litellm_app, session_manager=session_manager_stateful, config=RegistryConfig.from_env())
