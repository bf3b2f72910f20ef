"""The audit's report: what the registry recorded over a window, as plain values and as its JSON document.

`registry.reader` fills it from Redis; `mcp-registry audit` renders it (docs/audit.md documents
the JSON). No I/O here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from mcp_registry.outcomes import Action, ForwardFailure, Status
from mcp_registry.registry.migration import Migration

_NOT_LEGITIMATE: Final = frozenset(s.value for s in Status if s.legitimate is False)
_LEGITIMATE: Final = frozenset(s.value for s in Status if s.legitimate)


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker of the deployment, as the window saw it."""

    worker: str
    alive: bool
    """Its heartbeat is newer than `now - session_ttl`."""
    last_heartbeat: float | None
    """Epoch seconds of its last heartbeat; None when it only appears in counters."""
    live: int
    """Sessions it holds now (0 unless alive)."""
    created: int
    ended: int
    reuse_issued: int
    """Requests on sessions it issued that landed on another worker."""
    reuse_served: int
    """Requests it served on sessions another worker issued."""


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Lifetime of the sessions that ended in the window (interpolated within histogram buckets)."""

    count: int
    median: float | None
    p95: float | None
    mean: float | None


@dataclass(frozen=True, slots=True)
class ClientChurn:
    name: str
    version: str
    created: int
    share: float
    """Fraction of all creations with a known client."""
    churning: bool


@dataclass(frozen=True, slots=True)
class LookupCount:
    status: str
    action: str
    count: int


@dataclass(frozen=True, slots=True)
class Reuse:
    origin: str
    serving: str
    count: int


@dataclass(frozen=True, slots=True)
class Dropped:
    worker: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class MinuteStats:
    minute: int
    """Epoch seconds of the minute's start."""
    created: int
    ended: int
    reuse: int
    fabricated: int
    malformed: int


@dataclass(frozen=True, slots=True)
class Takeover:
    """Sessions saved by takeover next to sessions lost (`MCP_SESSION_CONTINUITY=adopt`)."""

    adopted: tuple[tuple[str, int], ...] = ()
    """By `AdoptReason`."""
    failed: tuple[tuple[str, int], ...] = ()
    """By `TakeoverFailure`."""
    lost: int = 0
    """404s to an id the registry knows, all clients (the migration view's `lost`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "adopted": sum(n for _, n in self.adopted),
            "adopted_by_reason": dict(self.adopted),
            "failed_by_reason": dict(self.failed),
            "lost": self.lost,
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Everything the audit says about one window. Lists are sorted; `to_json` is stable."""

    window_seconds: float
    window_start: float
    """Start of the first minute read (epoch seconds)."""
    now: float
    created: int
    ended: int
    live: int
    ended_by_reason: tuple[tuple[str, int], ...]
    workers: tuple[WorkerStats, ...]
    lifetime: Lifetime
    lookups: tuple[LookupCount, ...]
    reuse: tuple[Reuse, ...]
    clients: tuple[ClientChurn, ...]
    legacy_requests: int
    modern_requests: int
    dropped: tuple[Dropped, ...]
    forward_failures: tuple[Dropped, ...]
    """Continuity's hops that no owner served, by serving worker and `ForwardFailure` reason."""
    timeline: tuple[MinuteStats, ...]
    has_data: bool
    """False when the window holds no counter and no worker: nothing was recorded."""
    takeover: Takeover = field(default_factory=Takeover)
    """Sessions taken over from workers that were gone, and those lost (`MCP_SESSION_CONTINUITY=adopt`)."""
    migration: Migration = field(default_factory=Migration)
    """Which clients still depend on sessions (`registry.migration`)."""

    @property
    def worker_ids(self) -> tuple[str, ...]:
        return tuple(w.worker for w in self.workers)

    @property
    def lookups_by_status(self) -> dict[str, int]:
        """Every classification (zero when unseen), then any unknown one the registry holds."""
        counts = dict.fromkeys((s.value for s in Status), 0)
        for entry in self.lookups:
            counts[entry.status] = counts.get(entry.status, 0) + entry.count
        return counts

    @property
    def lookups_by_action(self) -> dict[str, int]:
        counts = dict.fromkeys((a.value for a in Action), 0)
        for entry in self.lookups:
            counts[entry.action] = counts.get(entry.action, 0) + entry.count
        return counts

    @property
    def forward_failures_by_reason(self) -> dict[str, int]:
        """Every `ForwardFailure` reason (zero when unseen), then any unknown one the registry holds."""
        counts = dict.fromkeys((f.value for f in ForwardFailure), 0)
        for row in self.forward_failures:
            counts[row.reason] = counts.get(row.reason, 0) + row.count
        return counts

    @property
    def legitimacy(self) -> dict[str, int]:
        by_status = self.lookups_by_status
        return {
            "legitimate": sum(n for s, n in by_status.items() if s in _LEGITIMATE),
            "not_legitimate": sum(n for s, n in by_status.items() if s in _NOT_LEGITIMATE),
            "unverified": by_status[Status.UNVERIFIED.value],
        }

    @property
    def legacy_share(self) -> float | None:
        total = self.legacy_requests + self.modern_requests
        return self.legacy_requests / total if total else None

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (docs/audit.md); row keys are the dataclasses' fields."""
        return {
            "window_seconds": _number(self.window_seconds),
            "window": {"start": _number(self.window_start), "end": _number(self.now)},
            "sessions": {
                "created": self.created,
                "ended": self.ended,
                "live": self.live,
                "ended_by_reason": dict(self.ended_by_reason),
                "per_worker": [asdict(w) for w in self.workers],
            },
            "lifetime_seconds": asdict(self.lifetime),
            "lookups": self.lookups_by_status,
            "lookup_actions": self.lookups_by_action,
            "lookup_legitimacy": self.legitimacy,
            "lookup_details": [asdict(e) for e in self.lookups],
            "cross_worker_reuse": [asdict(r) for r in self.reuse],
            "clients": [asdict(c) for c in self.clients],
            "protocol_eras": {
                "legacy": self.legacy_requests,
                "modern": self.modern_requests,
                "legacy_share": self.legacy_share,
            },
            "forwarding": {
                "forwarded": self.lookups_by_action[Action.FORWARD.value],
                "served": sum(e.count for e in self.lookups if e.action == Action.FORWARD.value
                              and e.status == Status.CROSS_WORKER.value),
                "failed": sum(f.count for f in self.forward_failures),
                "failed_by_reason": self.forward_failures_by_reason,
            },
            "dropped_events": {
                "total": sum(d.count for d in self.dropped),
                "by_worker": [asdict(d) for d in self.dropped],
            },
            "timeline": [asdict(m) for m in self.timeline],
            "workers": list(self.worker_ids),
            "takeover": self.takeover.to_json(),
            "migration": self.migration.to_json(),
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
