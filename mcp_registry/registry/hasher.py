"""The keyed id hash every worker of a deployment shares (`mcp_registry.session.id_hash`)."""

from __future__ import annotations

import base64
import hmac
from typing import Final

RECENT: Final = 4096


def id_hash(key: bytes, session_id: str) -> str:
    """The keyed hash of a session id: 96 bits of HMAC-SHA256, 16 url-safe characters."""
    digest = hmac.digest(key, session_id.encode("ascii", "surrogateescape"), "sha256")
    return base64.urlsafe_b64encode(digest[:12]).decode("ascii")


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
