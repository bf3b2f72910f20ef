"""The keyed id hash every worker of a deployment shares (`mcp_registry.session.id_hash`)."""

from __future__ import annotations

from typing import Final

from mcp_registry.registry.keys import id_hash

RECENT: Final = 4096


class IdHasher:
    """Hashes ids once the deployment's key is known: configured, or agreed through Redis.

    Until then `hash()` answers None: a worker never invents a key of its own, since its
    hashes would match no other worker's.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self._recent: dict[str, str] = {}

    @property
    def key(self) -> bytes | None:
        return self._key

    @key.setter
    def key(self, key: bytes | None) -> None:
        if key != self._key:
            self._recent.clear()
        self._key = key

    def hash(self, session_id: str) -> str | None:
        """The id's hash; the last `RECENT` ids' are remembered (a session's hops repeat its id)."""
        if self._key is None:
            return None
        found = self._recent.get(session_id)
        if found is None:
            if len(self._recent) >= RECENT:
                self._recent.clear()
            found = self._recent[session_id] = id_hash(self._key, session_id)
        return found

    def require(self, session_id: str) -> str:
        if self.key is None:
            raise LookupError("the registry hash key is not known yet")
        return id_hash(self.key, session_id)
