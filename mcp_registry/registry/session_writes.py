"""The registry's session keys: creations and ends pending a write, and the sliding expiry of live ones.

A session's live key (`SET P:s:{H} <worker> EX ttl`) is written when it opens and re-asserted while
the worker holds it; when it ends, the key goes and a tombstone (`P:t:{H}`, same slot) remembers
who issued it and when it ended, for the retention window. The raw id stays in this process's
memory: keys hold only its keyed hash.

The registry keeps its own table of the sessions it has written (hash, last write), reconciled
with the ids the worker says it holds at each refresh: nothing here reads or changes the request
path's objects.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from mcp_registry.outcomes import EndReason
from mcp_registry.registry import key_schema
from mcp_registry.registry.events import SessionClosed, SessionOpened
from mcp_registry.registry.hasher import IdHasher

Command = tuple[str, tuple[Any, ...], dict[str, Any]]

WRITE_IF_STILL_OURS: Final = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
"""With takeover on, a worker re-asserts a live key only while it still names this worker at its route
(or has lapsed): once another worker adopted the session (its old owner draining), the old owner's
refreshes and handover must not name it again — a third worker would then adopt it a second time."""


UNKNOWN_CLIENT: key_schema.Client = ("unknown", "unknown")


@dataclass(slots=True)
class _Written:
    client: key_schema.Client = UNKNOWN_CLIENT
    """Who opened it (from its `initialize`): written with the live key and the tombstone."""
    takeover: tuple[str, str] | None = None
    """Its owner's route and handshake (takeover on): written with the live key."""
    id_hash: str | None = None
    refreshed_at: float = float("-inf")
    """Monotonic time the live key was last written."""
    adopted: bool = False
    """Taken over here and not yet written: its first write names this worker whatever the key says."""


class SessionWrites:
    def __init__(
        self, *, worker: str, schema: key_schema.KeySchema, hasher: IdHasher, ttl: int, retention: int, limit: int,
        monotonic: Callable[[], float],
    ) -> None:
        self._worker = worker
        self._keys = schema
        self._hasher = hasher
        self._ttl = ttl
        self._retention = retention
        self._limit = limit
        self._monotonic = monotonic
        self._written: dict[str, _Written] = {}
        self.opened: list[SessionOpened] = []
        self.closed: list[SessionClosed] = []
        self._due: list[tuple[str, _Written]] = []

    # --- folding (no I/O) ----------------------------------------------------------------------
    def open(self, event: SessionOpened) -> None:
        written = self._written.setdefault(event.session_id, _Written())
        written.client = (event.client.name, event.client.version)
        written.takeover = event.takeover
        written.adopted = event.adopted
        self.opened.append(event)
        if len(self.opened) > self._limit:  # the refresh re-asserts live sessions anyway
            self.opened.pop(0)

    def close(self, event: SessionClosed) -> SessionClosed | None:
        """Queue an end; returns one pushed out of a full backlog (to be counted as dropped)."""
        self.closed.append(event)
        return self.closed.pop(0) if len(self.closed) > self._limit else None

    def forget_hashes(self) -> None:
        """The deployment's key changed: every hash is computed again on its next write."""
        for written in self._written.values():
            written.id_hash = None

    def abandon(self) -> tuple[list[SessionOpened], list[SessionClosed]]:
        pending = self.opened, self.closed
        self.opened, self.closed = [], []
        return pending

    # --- commands --------------------------------------------------------------------------------
    def pending_commands(self) -> list[Command]:
        """The writes of the sessions opened and ended since the last pass."""
        commands: list[Command] = []
        now = self._monotonic()
        for opened in self.opened:
            written = self._written.setdefault(opened.session_id, _Written())
            commands.append(self._live_command(opened.session_id, written))
            written.refreshed_at = now
        for closed in self.closed:
            ended = self._written.pop(closed.session_id, _Written())
            if closed.reason is EndReason.HANDED_OVER:
                # It lives on: its live key is written once more (a full TTL for another worker to adopt it,
                # however long the server's graceful shutdown took), and no tombstone.
                if ended.takeover is not None:
                    commands.append(self._live_command(closed.session_id, ended))
                continue
            h = self._hash(closed.session_id, ended)
            commands.append(("delete", (self._keys.session(h),), {}))
            tombstone = key_schema.tombstone_value(self._worker, closed.ended_at, ended.client)
            commands.append(("set", (self._keys.tombstone(h), tombstone),
                             {"ex": self._retention}))
        return commands

    def written(self) -> None:
        """The pending writes reached Redis."""
        for opened in self.opened:
            if (written := self._written.get(opened.session_id)) is not None:
                written.adopted = False
        self.opened, self.closed = [], []

    def refresh_commands(self, live: Collection[str], *, every: bool, stale_before: float) -> list[Command]:
        """Re-assert the live keys of `live` (the ids the worker holds) that are due; forget the others.

        Due: every one (`every`: after an outage or a key change), else those last written before
        `stale_before`. Call `refreshed()` once they have reached Redis.
        """
        for gone in self._written.keys() - set(live):
            del self._written[gone]
        due: list[tuple[str, _Written]] = []
        for session_id in live:
            written = self._written.get(session_id)
            if written is None:
                written = self._written[session_id] = _Written()
            if every or written.refreshed_at <= stale_before:
                due.append((session_id, written))
        self._due = due
        return [self._live_command(sid, w) for sid, w in due]

    def _live_command(self, session_id: str, written: _Written) -> Command:
        """Its live key's write; with takeover on, only while the key still names this worker, unless this
        worker just adopted it (the key names the owner it took it from)."""
        value = key_schema.live_value(self._worker, written.client, written.takeover)
        key = self._keys.session(self._hash(session_id, written))
        if written.takeover is None or written.adopted:
            return ("set", (key, value), {"ex": self._ttl})
        ours = key_schema.live_value(self._worker, written.client, (written.takeover[0], ""))
        return ("eval", (WRITE_IF_STILL_OURS, 1, key, ours, value, self._ttl), {})

    def refreshed(self, now: float) -> None:
        """The refresh commands reached Redis."""
        for _, written in self._due:
            written.refreshed_at = now
        self._due = []

    def _hash(self, session_id: str, written: _Written) -> str:
        if written.id_hash is None:
            written.id_hash = self._hasher.require(session_id)
        return written.id_hash
