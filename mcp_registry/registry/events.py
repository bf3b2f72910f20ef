"""What the request path hands to the background writer: plain values, events in and answers out.

Nothing here does I/O or refers to the request path's objects: a stale id's answer goes back
through the callable the event carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mcp_registry.outcomes import Action, EndReason, Status


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What an `initialize` request said about the client (untrusted text)."""

    name: str = "unknown"
    version: str = "unknown"
    protocol_version: str = "unknown"

    @classmethod
    def from_initialize(cls, params: dict[str, object] | None) -> ClientInfo:
        if not params:
            return cls()
        info = params.get("clientInfo")
        name = version = "unknown"
        if isinstance(info, dict):
            name = str(info.get("name") or "unknown")
            version = str(info.get("version") or "unknown")
        protocol = params.get("protocolVersion")
        return cls(name, version, str(protocol) if protocol else "unknown")


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session_id: str
    """The raw id (kept in memory, hashed before anything reaches Redis)."""
    created_at: float
    """Wall-clock time of creation (epoch seconds)."""
    client: ClientInfo
    takeover: tuple[str, str] | None = None
    """With takeover on: where this worker listens (its route) and the session's handshake, encoded."""
    adopted: bool = False
    """It was taken over from a worker that is gone, not opened here."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session_id: str
    reason: EndReason
    lifetime: float
    ended_at: float


Answer = Callable[[Status, str | None, str | None, "tuple[str, str] | None"], None]
"""How a lookup's outcome goes back to the request side: status, the id's keyed hash, its origin worker,
and the client (name, version) that opened the session, when the registry knows it."""


@dataclass(frozen=True, slots=True)
class StaleSeen:
    """A request carried an id this worker does not hold: classify it and give the answer back."""

    session_id: str
    action: Action
    answer: Answer
    """Called once with what the id was (status, keyed hash, origin worker, client): ends the request's span."""
    seen_at: float
    """Monotonic time the request arrived."""
    seen_wall: float
    """Wall-clock time the request arrived (compared with a tombstone's end time)."""


Event = SessionOpened | SessionClosed | StaleSeen
