"""What an application learns when one of its workers adopts a session (`on_adopted=`).

A session taken over from a worker that is gone starts from its stored handshake: the SDK's
session is re-created under the id the client holds, but whatever the application kept in the
old process's memory for that session (a counter, a cache, an open file) did not move. An
application that keeps such state passes `SessionRegistryMiddleware(app, on_adopted=hook)`; the
hook runs once per adoption, on the adopting worker, after the session is re-created and before
the request that triggered the adoption is served — the place to reload that session's state
from the application's own store.

The hook is the application's code on the request path: keep it short. An exception it raises is
logged (without the session id) and the request is served all the same; it never fails the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mcp_registry.outcomes import AdoptReason


@dataclass(frozen=True, slots=True)
class Adoption:
    """A session this worker just took over."""

    session_id: str
    """The id the client holds and sends (`mcp-session-id`): what the application's tools see. A
    secret like any session id: key your store with it, do not log it."""
    reason: AdoptReason
    """`owner_gone` (its worker crashed or was restarted) or `owner_draining` (it is shutting down)."""
    previous_owner: str | None
    """The worker id (`MCP_SESSION_REGISTRY_WORKER_ID`) of the worker that held it, when known."""
    protocol_version: str
    """The protocol revision the session negotiated when it opened."""
    client_name: str | None
    """`clientInfo.name` from the session's `initialize`."""
    client_version: str | None
    """`clientInfo.version` from the session's `initialize`."""


OnAdopted = Callable[[Adoption], Awaitable[None] | None]
"""A hook called once per adoption (sync or async)."""
