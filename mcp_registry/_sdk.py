"""The one place that reads the SDK session manager's internals.

`StreamableHTTPSessionManager` keeps its live sessions in the private dict `_server_instances`
(session id -> transport): it adds an id when it admits a session and removes it the moment the
session ends (DELETE, idle timeout, crash, failed opening request). `tests/test_sdk.py` pins that
behaviour against the installed SDK, so an SDK release that changes it fails loudly there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
