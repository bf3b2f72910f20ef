"""The one place that reads the SDK session manager's internals.

`StreamableHTTPSessionManager` keeps its live sessions in the private dict `_server_instances`
(session id -> transport): it adds an id when it admits a session and removes it the moment the
session ends (DELETE, idle timeout, crash, failed opening request). `tests/test_sdk.py` pins that
behaviour against the installed SDK, so an SDK release that changes it fails loudly there.

With continuity on, `issue_ids_with` makes the manager hand out ids of our making: it wraps the
manager's `_admit_session` (where the SDK creates a session's transport under its uuid4 id) and
re-keys the new session under the sealed id before any request can see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager


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
            max_body_bytes=manager.max_request_body_size,
        )


def issue_ids_with(manager: StreamableHTTPSessionManager, make_id: Callable[[str], str]) -> None:
    """From now on, a session the manager admits gets `make_id(sdk_id)` as its id, in every SDK structure."""
    admit = manager._admit_session

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
            if sdk_id in manager._session_owners:
                manager._session_owners[our_id] = manager._session_owners.pop(sdk_id)
        return transport

    manager._admit_session = admit_with_our_id  # type: ignore[method-assign]


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


def find_manager(app: object) -> StreamableHTTPSessionManager | None:
    """The SDK session manager behind `app`'s Streamable HTTP route, if there is exactly one."""
    managers = {id(m): m for _, e in _endpoints(app)
                if isinstance(m := getattr(e, "session_manager", None), StreamableHTTPSessionManager)}
    return next(iter(managers.values())) if len(managers) == 1 else None


def endpoint_paths(app: object, manager: StreamableHTTPSessionManager) -> frozenset[str] | None:
    """The paths at which `app` serves `manager`'s Streamable HTTP endpoint, or None if none is found.

    Each path is given with and without a trailing slash.
    """
    found = {path for path, endpoint in _endpoints(app) if getattr(endpoint, "session_manager", None) is manager}
    if not found:
        return None
    return frozenset({path.rstrip("/") or "/" for path in found} | {path.rstrip("/") + "/" for path in found})
