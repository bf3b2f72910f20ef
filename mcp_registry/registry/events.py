"""What the request path hands to the background writer. Plain data; nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Span

from mcp_registry.decision import Action
from mcp_registry.sessions import OwnedSession
from mcp_registry.telemetry import EndReason


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
    session: OwnedSession
    client: ClientInfo


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session: OwnedSession
    reason: EndReason
    lifetime: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class StaleSeen:
    """A request carried an id this worker does not hold; classify it and end its span."""

    session_id: str
    action: Action
    span: Span
    seen_at: float
    """Monotonic time the request arrived."""
    seen_wall: float
    """Wall-clock time the request arrived (compared with a tombstone's end time)."""


Event = SessionOpened | SessionClosed | StaleSeen
