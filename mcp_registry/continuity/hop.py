"""What a hop reports back, and the internal headers between a forwarder and an owner. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from starlette.types import Message

OWNER_HEADER: Final = b"mcp-registry-owner"
"""Set by the owner on a forwarded answer: its worker id (removed before the answer reaches the client)."""
GONE_HEADER: Final = b"mcp-registry-session-gone"
"""Set by the owner when it no longer holds the session (removed before the answer reaches the client)."""


class ForwardFailure(StrEnum):
    """Why a hop did not end with the owner serving the request (`mcp_registry.forward.failure`)."""

    OWNER_GONE = "owner_gone"
    """The owner's listener is not there (worker killed, scaled down, restarted elsewhere)."""
    SESSION_GONE = "session_gone"
    """The owner is up but no longer holds the session (ended, idle, or a previous incarnation's)."""
    TIMEOUT = "timeout"
    """The owner did not answer within the forward timeout."""
    REFUSED = "refused"
    """The owner's listener refused the hop (e.g. the hosts' clocks are more than 30 s apart)."""
    BROKEN = "broken"
    """The connection failed after the owner had started to answer."""


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
