"""The keyed id hash every worker of a deployment shares (`mcp_registry.session.id_hash`)."""

from __future__ import annotations

from mcp_registry.registry.keys import id_hash


class IdHasher:
    """Hashes ids once the deployment's key is known: configured, or agreed through Redis.

    Until then `hash()` answers None: a worker never invents a key of its own, since its
    hashes would match no other worker's.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key

    def hash(self, session_id: str) -> str | None:
        return None if self.key is None else id_hash(self.key, session_id)

    def require(self, session_id: str) -> str:
        if self.key is None:
            raise LookupError("the registry hash key is not known yet")
        return id_hash(self.key, session_id)
