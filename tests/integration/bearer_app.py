"""An app behind bearer tokens, served by real uvicorn hosts in `test_takeover_refusals.py`.

`alice-token` is alice, `bob-token` is bob; any other token is refused by the SDK (401). One tool,
`whoami`, names the worker that served the call (`BEARER_APP_HOST`, then its pid). Every
`MCP_SESSION_*` variable configures the middleware, as in the demo app. Served with
`uvicorn --factory tests.integration.bearer_app:build_app`.
"""

from __future__ import annotations

import os
from typing import Final

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mcp_registry import RegistryConfig, SessionRegistryMiddleware

PRINCIPALS: Final = {"alice-token": "alice", "bob-token": "bob"}
ENV_HOST: Final = "BEARER_APP_HOST"


class Tokens:
    async def verify_token(self, token: str) -> AccessToken | None:
        principal = PRINCIPALS.get(token)
        return AccessToken(token=token, client_id=principal, scopes=[]) if principal is not None else None


def build_app() -> SessionRegistryMiddleware:
    config = RegistryConfig.from_env()
    settings = AuthSettings(
        issuer_url=AnyHttpUrl("https://auth.example"), resource_server_url=AnyHttpUrl("http://127.0.0.1/mcp"),
        validate_token_resource=False,
    )
    server = MCPServer("bearer-app", token_verifier=Tokens(), auth=settings)

    @server.tool()
    def whoami() -> str:
        return f"{os.environ.get(ENV_HOST, '')}:{os.getpid()}"

    inner = server.streamable_http_app(
        json_response=True, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    inner.add_route("/healthz", _healthz, methods=["GET"])
    return SessionRegistryMiddleware(inner, session_manager=server.session_manager, config=config)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")
