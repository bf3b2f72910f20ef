"""The sessions this worker opened, and when each ended.

The SDK ends sessions on its own (idle timeout, crash) without telling anyone. `SessionBook`
remembers what this worker opened and, on `sweep()`, compares that with what the SDK still
holds: whatever is gone ended. No I/O and no clock of its own (clocks are injected).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class OwnedSession:
    session_id: str
    """The raw id: kept in this process's memory only, like the SDK does."""
    created_at: float
    """Wall-clock time of creation (epoch seconds)."""
    started: float
    """Monotonic time of creation, for the lifetime."""
    client: tuple[str, str] = ("unknown", "unknown")
    """Who opened it: name and version from its `initialize` (untrusted text)."""
    adoptable: bool = False
    """Its handshake is stored (takeover on): another worker can adopt it when this one goes."""


class SessionBook:
    def __init__(
        self,
        live: Mapping[str, object],
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = live
        self._wall = wall
        self._monotonic = monotonic
        self._owned: dict[str, OwnedSession] = {}

    def rebind(self, live: Mapping[str, object]) -> None:
        """Watch another manager's live sessions from now on."""
        self._live = live

    def __len__(self) -> int:
        return len(self._owned)

    def __iter__(self) -> Iterator[OwnedSession]:
        return iter(list(self._owned.values()))

    def ids(self) -> list[str]:
        """The ids of the sessions held now (a snapshot: plain values for the registry)."""
        return list(self._owned)

    def get(self, session_id: str) -> OwnedSession | None:
        return self._owned.get(session_id)

    def opened(self, session_id: str, client: tuple[str, str] = ("unknown", "unknown")) -> OwnedSession:
        session = OwnedSession(session_id, self._wall(), self._monotonic(), client)
        self._owned[session_id] = session
        return session

    def closed(self, session_id: str) -> OwnedSession | None:
        """Forget a session that ended in a way we saw (a DELETE the SDK served)."""
        return self._owned.pop(session_id, None)

    def sweep(self) -> list[OwnedSession]:
        """Forget and return the sessions the SDK no longer holds."""
        gone = [s for sid, s in self._owned.items() if sid not in self._live]
        for session in gone:
            del self._owned[session.session_id]
        return gone

    def close_all(self) -> list[OwnedSession]:
        """Forget and return every session (the worker is shutting down)."""
        sessions = list(self._owned.values())
        self._owned.clear()
        return sessions

    def lifetime(self, session: OwnedSession) -> float:
        return max(0.0, self._monotonic() - session.started)

    def now(self) -> float:
        return self._wall()
