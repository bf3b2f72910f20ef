"""The registry's per-minute counters: folded in memory, flushed to one hash per minute.

Sessions opened and ended (by worker, client, reason, lifetime) are counted here as events
arrive; the request path's own counts (`RequestStats`, cumulative integers) are turned into
per-minute deltas at each flush. Each minute is flushed in a pipeline of its own (one key: one
slot, one node of a cluster) and stays pending until that pipeline succeeds, so a node failing
mid-flush never gets another minute's increments sent twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mcp_registry.outcomes import EndReason
from mcp_registry.registry import key_schema
from mcp_registry.telemetry import RequestStats

CLIENTS_PER_MINUTE: Final = 100
"""Distinct client labels counted per minute; the rest count as `other` (client names are untrusted)."""

Execute = Callable[..., Awaitable[list[Any]]]


class MinuteCounters:
    def __init__(
        self, *, worker: str, stats: RequestStats, schema: key_schema.KeySchema, retention_seconds: int
    ) -> None:
        self._worker = worker
        self._stats = stats
        self._keys = schema
        self._retention = retention_seconds
        self._pending: Counter[tuple[int, str]] = Counter()
        self._client_fields: Counter[int] = Counter()
        self._flushed_stats: dict[str, int] = {}

    # --- folding (no I/O) ----------------------------------------------------------------------
    def opened(self, created_at: float, client_name: str, client_version: str, *, adopted: bool = False) -> None:
        minute = key_schema.minute_of(created_at)
        if adopted:
            return  # a session that moved here: counted as adopted (from the request-path counts), not created
        self._pending[(minute, key_schema.f_created(self._worker))] += 1
        client = key_schema.f_client(client_name, client_version)
        if (minute, client) not in self._pending:
            if self._client_fields[minute] >= CLIENTS_PER_MINUTE:
                client = key_schema.f_client("other", "other")
            else:
                self._client_fields[minute] += 1
        self._pending[(minute, client)] += 1

    def ended(self, ended_at: float, reason: EndReason, lifetime: float, *, worker: str | None = None) -> None:
        minute = key_schema.minute_of(ended_at)
        self._pending[(minute, key_schema.f_ended(worker or self._worker, reason.value))] += 1
        self._pending[(minute, key_schema.f_lifetime(lifetime))] += 1
        self._pending[(minute, key_schema.F_LIFE_COUNT)] += 1
        self._pending[(minute, key_schema.F_LIFE_SUM_MS)] += round(lifetime * 1000)

    def lost(self, now: float, worker: str, count: int) -> None:
        """`count` sessions of a worker that stopped heart-beating ended (their lifetimes are unknown)."""
        self._pending[(key_schema.minute_of(now), key_schema.f_ended(worker, EndReason.WORKER_LOST.value))] += count

    def clear(self) -> None:
        self._pending.clear()
        self._client_fields.clear()

    # --- flushing ------------------------------------------------------------------------------
    async def flush(self, redis: Any, execute: Execute, *, now: float) -> None:
        """Send every pending minute, and the request-path counts since the last flush as `now`'s."""
        stats_now = self._stats_fields()
        deltas = Counter(self._pending)
        minute = key_schema.minute_of(now)
        for name, value in stats_now.items():
            if delta := value - self._flushed_stats.get(name, 0):
                deltas[(minute, name)] += delta
        if not deltas:
            return
        by_minute: dict[int, list[tuple[str, int]]] = {}
        for (m, name), value in sorted(deltas.items()):
            by_minute.setdefault(m, []).append((name, value))
        for m, fields in by_minute.items():
            pipe = redis.pipeline(transaction=False)
            for name, value in fields:
                pipe.hincrby(self._keys.minute(m), name, value)
            pipe.expire(self._keys.minute(m), self._retention)
            await execute(pipe, "counters", batch=len(fields))
            for name, _ in fields:
                self._pending.pop((m, name), None)
            self._client_fields.pop(m, None)
            if m == minute:  # (the request-path counts only ever go to the current minute)
                self._flushed_stats = stats_now

    def _stats_fields(self) -> dict[str, int]:
        """The request-path counts as per-minute counter fields (cumulative)."""
        stats = self._stats
        fields: dict[str, int] = {}
        for era, count in stats.requests.items():
            fields[key_schema.f_requests(era.value)] = count
        for (status, action), count in stats.lookup_counts().items():
            fields[key_schema.f_lookup(status.value, action.value)] = count
        for origin, count in stats.reuse.items():
            fields[key_schema.f_reuse(origin, self._worker)] = count
        for reason, count in stats.dropped.items():
            fields[key_schema.f_dropped(self._worker, reason)] = count
        for reason, count in stats.forward_failures.items():
            fields[key_schema.f_forward_failed(self._worker, reason)] = count
        for reason, count in stats.adopted.items():
            fields[key_schema.f_adopted(self._worker, reason)] = count
        for reason, count in stats.takeover_failures.items():
            fields[key_schema.f_takeover_failed(self._worker, reason)] = count
        # Two raw names may share a label once sanitised: their counts add up.
        for (client_era, name, version), count in stats.client_requests.items():
            field = key_schema.f_client_requests(client_era, name, version)
            fields[field] = fields.get(field, 0) + count
        for (name, version), count in stats.client_hops.items():
            field = key_schema.f_client_hops(name, version)
            fields[field] = fields.get(field, 0) + count
        for (name, version), count in stats.client_lost.items():
            field = key_schema.f_client_lost(name, version)
            fields[field] = fields.get(field, 0) + count
        return fields
