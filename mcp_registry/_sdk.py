"""The one place that reads the SDK's internals, for every supported line: `mcp` 1.26+ and 2.x.

`StreamableHTTPSessionManager` keeps its live sessions in the private dict `_server_instances`
(session id -> transport): it adds an id when it admits a session and removes it the moment the
session ends (DELETE, idle timeout, crash, failed opening request). `tests/test_sdk.py` pins that
behaviour against the installed SDK, so an SDK release that changes it fails loudly there.

What differs between lines, and what this module does about it:

| SDK internal                       | 2.x | 1.29-1.30 | 1.26-1.28 | without it                        |
|------------------------------------|-----|-----------|-----------|-----------------------------------|
| `mcp_types.version` handshake list | yes | no        | no        | `mcp.shared.version`'s list       |
| `max_request_body_size`            | yes | yes       | no        | our own bound, `DEFAULT_BODY_LIMIT` |
| `_admit_session` (continuity)      | yes | yes       | no        | continuity refuses to start       |
| forgets a DELETEd session          | yes | 1.30 only | no        | `forget_deleted` does it          |

Where the manager is: an app's Streamable HTTP route ends in an object with a `session_manager`
attribute (the SDK's `StreamableHTTPASGIApp`, in 1.x `FastMCP` and 2.x `MCPServer` apps;
FastMCP 3.x/4.x's own, possibly behind its `RequireAuthMiddleware`). FastMCP sets that attribute
in the app's lifespan and replaces it on every lifespan cycle, so what is found is the *holder*;
the manager is read from it when the lifespan has started (`SessionRegistryMiddleware` does).

With continuity on, `issue_ids_with` makes the manager hand out ids of our making: it wraps the
manager's `_admit_session` (where the SDK creates a session's transport under its uuid4 id) and
re-keys the new session under the sealed id before any request can see it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager


def _handshake_versions() -> frozenset[str]:
    try:
        versions = importlib.import_module("mcp_types.version").HANDSHAKE_PROTOCOL_VERSIONS
    except ImportError:  # mcp 1.x: every revision it knows uses the handshake (and session ids)
        versions = importlib.import_module("mcp.shared.version").SUPPORTED_PROTOCOL_VERSIONS
    return frozenset(str(v) for v in versions)


HANDSHAKE_PROTOCOL_VERSIONS: Final = _handshake_versions()
"""Protocol revisions that open a session with `initialize` (up to 2025-11-25)."""
DEFAULT_BODY_LIMIT: Final = 4 * 1024 * 1024
"""What we buffer at most when the SDK has no body limit of its own (mcp < 1.29): its later default.

(The floor, 1.26, is the first 1.x release that answers an unknown session id with the spec's 404.)"""


class UnsupportedSDK(RuntimeError):
    """The installed SDK lacks what a feature needs; the message names the version that has it."""


@dataclass(frozen=True, slots=True)
class ManagerView:
    live: Mapping[str, object]
    """The manager's live sessions by id; membership is all we read (a dict lookup per request)."""
    stateless: bool
    max_body_bytes: int
    """The SDK's request body limit: we never buffer more than this."""

    @classmethod
    def of(cls, manager: StreamableHTTPSessionManager) -> ManagerView:
        return cls(
            live=manager._server_instances,
            stateless=manager.stateless,
            max_body_bytes=getattr(manager, "max_request_body_size", DEFAULT_BODY_LIMIT),
        )

    @classmethod
    def unbound(cls) -> ManagerView:
        """Before the manager exists (FastMCP creates it in the app's lifespan): no session is ours."""
        return cls(live={}, stateless=False, max_body_bytes=DEFAULT_BODY_LIMIT)


def issue_ids_with(manager: StreamableHTTPSessionManager, make_id: Callable[[str], str]) -> None:
    """From now on, a session the manager admits gets `make_id(sdk_id)` as its id, in every SDK structure."""
    admit = getattr(manager, "_admit_session", None)
    if admit is None:
        raise UnsupportedSDK("session continuity needs mcp >= 1.29 (its manager admits sessions in one place)")

    def admit_with_our_id(requestor: Any) -> Any:
        transport = admit(requestor)
        if transport is None:
            return None
        sdk_id = transport.mcp_session_id
        if sdk_id is None:
            return transport
        our_id = make_id(sdk_id)
        if our_id != sdk_id:
            transport.mcp_session_id = our_id
            manager._server_instances[our_id] = manager._server_instances.pop(sdk_id)
            if sdk_id in getattr(manager, "_session_owners", {}):
                manager._session_owners[our_id] = manager._session_owners.pop(sdk_id)
        return transport

    manager._admit_session = admit_with_our_id  # type: ignore[method-assign]


def forget_deleted(manager: StreamableHTTPSessionManager, session_id: str) -> None:
    """After the SDK answered a DELETE on one of its sessions: make sure its table forgets it.

    mcp 1.30 and 2.x do it themselves (`_discard_session`); 1.26-1.29 keep a terminated session in
    `_server_instances` for the life of the process, so its id would stay "own" (and the table grow).
    """
    if not hasattr(manager, "_discard_session"):
        manager._server_instances.pop(session_id, None)
        getattr(manager, "_session_owners", {}).pop(session_id, None)


def principal_of(manager: StreamableHTTPSessionManager, session_id: str) -> str | None:
    """The principal the SDK bound a session to (its credential binding), as stable text; None: no credential.

    mcp 2.x keeps it in `_session_owners` (an `AuthorizationContext`: client id, issuer, subject); a line
    without that table binds no credential."""
    owner = getattr(manager, "_session_owners", {}).get(session_id)
    return None if owner is None else json.dumps(dict(owner), sort_keys=True, default=str)


async def discard(manager: StreamableHTTPSessionManager, session_id: str) -> None:
    """End a session the manager admitted (a takeover refused after its replay): its id answers 404."""
    transport = manager._server_instances.pop(session_id, None)
    getattr(manager, "_session_owners", {}).pop(session_id, None)
    if transport is not None and not transport.is_terminated:
        await transport.terminate()


def _endpoints(app: object) -> Iterator[tuple[str, object]]:
    """`(path, endpoint)` of every route reachable from `app`: through middleware (`.app`), routers
    (`.routes`) and mounts (their path prefixes), as an ASGI app built with Starlette exposes them."""

    def walk(node: object, prefix: str, depth: int) -> Iterator[tuple[str, object]]:
        if node is None or depth > 16:
            return
        routes = getattr(node, "routes", None)
        if not isinstance(routes, list):
            yield from walk(getattr(node, "app", None), prefix, depth + 1)
            return
        for route in routes:
            path = getattr(route, "path", "")
            if not isinstance(path, str):
                continue
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None:
                yield prefix + path, endpoint
            elif getattr(route, "routes", None) is not None or type(route).__name__ == "Mount":
                yield from walk(getattr(route, "app", None), prefix + path, depth + 1)

    yield from walk(app, "", 0)


def _holder_in(endpoint: object) -> object | None:
    """The object of an endpoint's chain (the endpoint, its `.app`, …) that holds a session manager."""
    node: object | None = endpoint
    for _ in range(8):
        if node is None:
            return None
        if hasattr(node, "session_manager"):
            manager = getattr(node, "session_manager", None)
            if manager is None or isinstance(manager, StreamableHTTPSessionManager):
                return node
        node = getattr(node, "app", None)
    return None


def find_holder(app: object) -> object | None:
    """What holds the SDK session manager behind `app`'s Streamable HTTP route, if exactly one thing does.

    Its `session_manager` may still be None (FastMCP sets it in the app's lifespan): read it with `manager_of`.
    """
    holders = {id(h): h for _, e in _endpoints(app) if (h := _holder_in(e)) is not None}
    return next(iter(holders.values())) if len(holders) == 1 else None


def manager_of(holder: object) -> StreamableHTTPSessionManager | None:
    manager = getattr(holder, "session_manager", None)
    return manager if isinstance(manager, StreamableHTTPSessionManager) else None


def holder_of(manager: StreamableHTTPSessionManager) -> object:
    """A holder for a manager passed explicitly (`session_manager=`)."""
    return _Held(manager)


@dataclass(frozen=True, slots=True)
class _Held:
    session_manager: StreamableHTTPSessionManager


def endpoint_paths(app: object, holder: object) -> frozenset[str] | None:
    """The paths at which `app` serves the Streamable HTTP endpoint of `holder` (or of the manager it
    holds), or None if none is found. Each path is given with and without a trailing slash.
    """
    manager = manager_of(holder)
    found = {
        path for path, endpoint in _endpoints(app)
        if (h := _holder_in(endpoint)) is holder or (manager is not None and manager_of(h) is manager)
    }  # fmt: skip
    if not found:
        return None
    return frozenset({path.rstrip("/") or "/" for path in found} | {path.rstrip("/") + "/" for path in found})

