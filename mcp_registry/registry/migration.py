"""The migration view: which clients still depend on sessions, and which have moved on. Pure.

MCP 2026-07-28 removed protocol sessions; a server keeps its stateful path only for clients that
still speak 2024-11-05 … 2025-11-25. Per client — name and version from `initialize` for a legacy
session, the `User-Agent` product for a sessionless request — the registry counts per minute the
sessions opened, the requests, the requests that hopped to their owner, and the sessions lost (a
404 to an id the registry knows). This module turns those counters into the audit's rows and its
one-line verdict: can the stateful path go, and if not, who holds it back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

from mcp_registry.outcomes import Era

TOP_CLIENTS: Final = 20
"""Rows per era in the report; the rest are summed into one `other` row (client names are untrusted)."""

Key = tuple[str, str, str]
"""(era, client name, client version)."""


@dataclass(frozen=True, slots=True)
class ClientUse:
    era: str
    name: str
    version: str
    sessions: int
    """Legacy sessions it opened (0 for a sessionless client)."""
    requests: int
    hopped: int
    """Of its requests, those that reached the session's owner through another worker."""
    lost: int
    """Times it got a 404 for a session the registry knows (it has to start over, if it can)."""
    last_seen: float | None
    """Start of the last minute it was counted in (epoch seconds)."""


@dataclass(frozen=True, slots=True)
class Migration:
    clients: tuple[ClientUse, ...] = ()
    legacy_requests: int = 0
    """Requests of the legacy era in the window (the `protocol_eras` counts)."""
    modern_requests: int = 0

    @property
    def legacy_clients(self) -> int:
        return len({(c.name, c.version) for c in self.clients if c.era == Era.LEGACY.value})

    @property
    def modern_clients(self) -> int:
        return len({(c.name, c.version) for c in self.clients if c.era == Era.MODERN.value})

    @property
    def legacy_share(self) -> float | None:
        total = self.legacy_requests + self.modern_requests
        return self.legacy_requests / total if total else None

    @property
    def last_legacy_seen(self) -> float | None:
        seen = [c.last_seen for c in self.clients if c.era == Era.LEGACY.value and c.last_seen is not None]
        return max(seen) if seen else None

    def verdict(self) -> str:
        """One line: can the stateful path go, and if not, who holds it back."""
        share = self.legacy_share
        if not self.legacy_clients and not self.legacy_requests:
            if not self.modern_requests:
                return "No client traffic in this window."
            return "No client needed sessions in this window: the stateful path could be switched off."
        names = ", ".join([f"{c.name} {c.version}" for c in self.clients if c.era == Era.LEGACY.value][:3])
        last = self.last_legacy_seen
        when = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M UTC") if last is not None else "—"
        return (
            f"{self.legacy_clients} client(s) still need sessions ({names}"
            f"{', …' if self.legacy_clients > 3 else ''}): "
            f"{'—' if share is None else f'{share:.1%}'} of requests; last legacy request in the minute of {when}."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": [asdict(c) for c in self.clients],
            "legacy_clients": self.legacy_clients,
            "modern_clients": self.modern_clients,
            "legacy_share": self.legacy_share,
            "last_legacy_request": self.last_legacy_seen,
            "verdict": self.verdict(),
        }


class ClientCounters:
    """Sums the per-client counter fields of a window, minute by minute."""

    def __init__(self) -> None:
        self.sessions: Counter[Key] = Counter()
        self.requests: Counter[Key] = Counter()
        self.hopped: Counter[Key] = Counter()
        self.lost: Counter[Key] = Counter()
        self.last_minute: dict[Key, int] = {}

    def add(self, minute: int, kind: str, key: Key, value: int) -> None:
        getattr(self, kind)[key] += value
        if value > 0 and minute > self.last_minute.get(key, -1):
            self.last_minute[key] = minute

    def migration(self, *, legacy_requests: int, modern_requests: int) -> Migration:
        keys = set(self.sessions) | set(self.requests) | set(self.hopped) | set(self.lost)
        rows: list[ClientUse] = []
        for era in (Era.LEGACY.value, Era.MODERN.value):
            ranked = sorted((k for k in keys if k[0] == era), key=lambda k: (-self.requests[k], -self.sessions[k], k))
            rows += [self._row(k) for k in ranked[:TOP_CLIENTS]]
            if rest := ranked[TOP_CLIENTS:]:
                rows.append(self._folded(era, rest))
        return Migration(tuple(rows), legacy_requests, modern_requests)

    def _row(self, key: Key) -> ClientUse:
        minute = self.last_minute.get(key)
        return ClientUse(
            era=key[0], name=key[1], version=key[2], sessions=self.sessions[key], requests=self.requests[key],
            hopped=self.hopped[key], lost=self.lost[key], last_seen=minute * 60.0 if minute is not None else None,
        )

    def _folded(self, era: str, keys: list[Key]) -> ClientUse:
        rows = [self._row(k) for k in keys]
        seen = [r.last_seen for r in rows if r.last_seen is not None]
        return ClientUse(
            era=era, name="other", version=f"{len(rows)} clients", sessions=sum(r.sessions for r in rows),
            requests=sum(r.requests for r in rows), hopped=sum(r.hopped for r in rows),
            lost=sum(r.lost for r in rows), last_seen=max(seen) if seen else None,
        )
