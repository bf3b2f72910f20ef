"""What a hop reports back, and the internal headers between a forwarder and an owner. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.types import Message

from mcp_registry.outcomes import ForwardFailure

OWNER_HEADER: Final = b"mcp-registry-owner"
"""Set by the owner on a forwarded answer: its worker id (removed before the answer reaches the client)."""
GONE_HEADER: Final = b"mcp-registry-session-gone"
DRAINING_HEADER: Final = b"mcp-registry-draining"
"""Set (with 503) by an owner that is shutting down, on a request it will not serve: its session is to be adopted."""
"""Set by the owner when it no longer holds the session (removed before the answer reaches the client)."""




@dataclass(slots=True)
class HopResult:
    failure: ForwardFailure | None = None
    owner: str | None = None
    """The owner's worker id, as its listener said."""
    headers_seconds: float | None = None
    """Time until the owner's response headers arrived."""
    response_started: bool = False
    """Whether anything was sent to the client (if not, the caller answers for the failure)."""
    replay: list[Message] | None = None
    """Request messages read but delivered to no owner, for the caller to replay."""
