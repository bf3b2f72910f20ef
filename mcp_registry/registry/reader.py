"""Read the registry's aggregates for a time window into an `AuditReport`.

The reader touches only what the registry keeps per minute and per worker (see `keys.py`):
one `HGETALL` per minute of the window, the `P:workers` zset and the hashes of the workers
that matter for the window, all pipelined. It never scans or lists session keys, so its cost
depends on the window's length and the number of workers, not on the number of sessions.
It only reads; it never writes.

The window covers every minute that overlaps `[now - since_seconds, now]`.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

from mcp_registry.outcomes import EndReason, Era, Status
from mcp_registry.registry.client import RegistryRedis
from mcp_registry.registry.key_schema import (
    F_LIFE_COUNT,
    F_LIFE_SUM_MS,
    LIFETIME_BUCKETS,
    SEP,
    KeySchema,
    minute_of,
)
from mcp_registry.registry.migration import ClientCounters
from mcp_registry.registry.report import (
    AuditReport,
    ClientChurn,
    Dropped,
    Lifetime,
    LookupCount,
    MinuteStats,
    Reuse,
    Takeover,
    WorkerStats,
)

MINUTES_PER_PIPELINE: Final = 1440
"""Minute hashes read per pipelined round trip (one day)."""
CHURN_MIN_SESSIONS: Final = 10
CHURN_FACTOR: Final = 3
"""A client is `churning` when it opened at least `CHURN_MIN_SESSIONS` sessions and at least
`CHURN_FACTOR` times the median of what the other clients opened."""

_LIFE_BOUNDS: Final = {**{str(b): float(b) for b in LIFETIME_BUCKETS}, "inf": math.inf}
"""`life|<le>` field suffix -> upper bound of the bucket (seconds)."""


async def read_audit(
    redis: RegistryRedis, *, prefix: str, since_seconds: float, now: float, session_ttl: int
) -> AuditReport:
    """Read the window `[now - since_seconds, now]` (whole minutes) of the registry under `prefix`.

    A worker is alive when its heartbeat is newer than `now - session_ttl`; the sessions of a
    worker that stopped heart-beating are counted as ended (`worker_lost`) once their TTL ran
    out inside the window, as long as the worker is still listed (not yet reaped).
    """
    if not (math.isfinite(since_seconds) and since_seconds > 0):
        raise ValueError(f"since_seconds must be a positive number; got {since_seconds!r}")
    keys = KeySchema(prefix)
    first, last = minute_of(now - since_seconds), minute_of(now)
    minutes = list(range(first, last + 1))
    window_start = first * 60.0

    heartbeats, hashes = await _read_minutes(redis, keys, minutes)
    counters = _Counters()
    for minute, fields in zip(minutes, hashes, strict=True):
        counters.add(minute, fields)

    # Workers whose sessions may have been alive during the window; others are history.
    relevant = {w: hb for w, hb in heartbeats.items() if hb + session_ttl >= window_start}
    live_of = await _read_live(redis, keys, list(relevant))
    alive = {w for w, hb in relevant.items() if hb > now - session_ttl}
    for worker, heartbeat in relevant.items():
        if worker not in alive and live_of[worker]:
            counters.ended[(worker, EndReason.WORKER_LOST.value)] += live_of[worker]
            counters.timeline_ended[minute_of(heartbeat + session_ttl)] += live_of[worker]
    return counters.report(
        since_seconds=since_seconds,
        window_start=window_start,
        now=now,
        minutes=minutes,
        heartbeats=relevant,
        live={w: live_of[w] for w in alive},
    )


async def _read_minutes(
    client: RegistryRedis, keys: KeySchema, minutes: list[int]
) -> tuple[dict[str, float], list[Mapping[Any, Any]]]:
    """The `P:workers` zset and the minute hashes, in pipelines of at most a day each."""
    hashes: list[Mapping[Any, Any]] = []
    heartbeats: dict[str, float] = {}
    for start in range(0, len(minutes), MINUTES_PER_PIPELINE):
        async with client.pipeline(transaction=False) as pipe:
            if start == 0:
                pipe.zrange(keys.workers, 0, -1, withscores=True)
            for minute in minutes[start : start + MINUTES_PER_PIPELINE]:
                pipe.hgetall(keys.minute(minute))
            results = await pipe.execute()
        if start == 0:
            heartbeats = {_text(member): float(score) for member, score in results[0]}
            results = results[1:]
        hashes.extend(results)
    return heartbeats, hashes


async def _read_live(client: RegistryRedis, keys: KeySchema, workers: list[str]) -> dict[str, int]:
    if not workers:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.hget(keys.worker(worker), "live")
        results = await pipe.execute()
    return {worker: _int(value) for worker, value in zip(workers, results, strict=True)}


class _Counters:
    """Sums the per-minute counter fields of the window."""

    def __init__(self) -> None:
        self.created: Counter[str] = Counter()
        self.ended: Counter[tuple[str, str]] = Counter()
        self.clients: Counter[tuple[str, str]] = Counter()
        self.lookups: Counter[tuple[str, str]] = Counter()
        self.reuse: Counter[tuple[str, str]] = Counter()
        self.eras: Counter[str] = Counter()
        self.life_buckets: Counter[float] = Counter()
        self.life_count = 0
        self.life_sum_ms = 0
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.forward_failed: Counter[tuple[str, str]] = Counter()
        self.timeline_created: Counter[int] = Counter()
        self.timeline_ended: Counter[int] = Counter()
        self.timeline_reuse: Counter[int] = Counter()
        self.timeline_status: Counter[tuple[int, str]] = Counter()
        self.by_client = ClientCounters()
        self.adopted: Counter[str] = Counter()
        self.adopt_failed: Counter[str] = Counter()
        self.any_field = False

    def add(self, minute: int, fields: Mapping[Any, Any]) -> None:
        for raw_name, raw_value in fields.items():
            self.any_field = True
            value = _int(raw_value)
            match _text(raw_name).split(SEP):
                case ["created", worker]:
                    self.created[worker] += value
                    self.timeline_created[minute] += value
                case ["ended", worker, reason]:
                    self.ended[(worker, reason)] += value
                    self.timeline_ended[minute] += value
                case ["client", name, version]:
                    self.clients[(name, version)] += value
                    self.by_client.add(minute, "sessions", (Era.LEGACY.value, name, version), value)
                case ["creq", era, name, version]:
                    self.by_client.add(minute, "requests", (era, name, version), value)
                case ["chop", name, version]:
                    self.by_client.add(minute, "hopped", (Era.LEGACY.value, name, version), value)
                case ["clost", name, version]:
                    self.by_client.add(minute, "lost", (Era.LEGACY.value, name, version), value)
                case ["lookup", status, action]:
                    self.lookups[(status, action)] += value
                    self.timeline_status[(minute, status)] += value
                case ["reuse", origin, serving]:
                    self.reuse[(origin, serving)] += value
                    self.timeline_reuse[minute] += value
                case ["requests", era]:
                    self.eras[era] += value
                case ["life", bound] if bound in _LIFE_BOUNDS:
                    self.life_buckets[_LIFE_BOUNDS[bound]] += value
                case [name] if name == F_LIFE_COUNT:
                    self.life_count += value
                case [name] if name == F_LIFE_SUM_MS:
                    self.life_sum_ms += value
                case ["dropped", worker, reason]:
                    self.dropped[(worker, reason)] += value
                case ["adopted", _worker, reason]:
                    self.adopted[reason] += value
                case ["adopt_failed", _worker, reason]:
                    self.adopt_failed[reason] += value
                case ["forward_failed", worker, reason]:
                    self.forward_failed[(worker, reason)] += value
                case _:
                    pass  # a field this reader does not know (a newer writer): ignored

    def report(
        self,
        *,
        since_seconds: float,
        window_start: float,
        now: float,
        minutes: list[int],
        heartbeats: Mapping[str, float],
        live: Mapping[str, int],
    ) -> AuditReport:
        ended_by_worker: Counter[str] = Counter()
        ended_by_reason = Counter(dict.fromkeys((r.value for r in EndReason), 0))
        for (worker, reason), n in self.ended.items():
            ended_by_worker[worker] += n
            ended_by_reason[reason] += n
        issued: Counter[str] = Counter()
        served: Counter[str] = Counter()
        for (origin, serving), n in self.reuse.items():
            issued[origin] += n
            served[serving] += n
        seen = set(heartbeats) | set(self.created) | set(ended_by_worker) | set(issued) | set(served)
        seen |= {worker for worker, _ in self.dropped} | {worker for worker, _ in self.forward_failed}
        workers = tuple(
            WorkerStats(
                worker=w,
                alive=w in live,
                last_heartbeat=heartbeats.get(w),
                live=live.get(w, 0),
                created=self.created[w],
                ended=ended_by_worker[w],
                reuse_issued=issued[w],
                reuse_served=served[w],
            )
            for w in sorted(seen)
        )
        return AuditReport(
            window_seconds=since_seconds,
            window_start=window_start,
            now=now,
            created=sum(self.created.values()),
            ended=sum(self.ended.values()),
            live=sum(live.values()),
            ended_by_reason=tuple(sorted(ended_by_reason.items())),
            workers=workers,
            lifetime=self._lifetime(),
            lookups=tuple(LookupCount(s, a, n) for (s, a), n in sorted(self.lookups.items()) if n),
            reuse=tuple(Reuse(o, s, n) for (o, s), n in sorted(self.reuse.items()) if n),
            clients=_churn(self.clients),
            legacy_requests=self.eras[Era.LEGACY.value],
            modern_requests=self.eras[Era.MODERN.value],
            dropped=tuple(Dropped(w, r, n) for (w, r), n in sorted(self.dropped.items()) if n),
            forward_failures=tuple(Dropped(w, r, n) for (w, r), n in sorted(self.forward_failed.items()) if n),
            timeline=tuple(
                MinuteStats(
                    minute=m * 60,
                    created=self.timeline_created[m],
                    ended=self.timeline_ended[m],
                    reuse=self.timeline_reuse[m],
                    fabricated=self.timeline_status[(m, Status.FABRICATED.value)],
                    malformed=self.timeline_status[(m, Status.MALFORMED.value)],
                )
                for m in minutes
            ),
            has_data=self.any_field or bool(heartbeats),
            takeover=Takeover(
                adopted=tuple(sorted((r, n) for r, n in self.adopted.items() if n)),
                failed=tuple(sorted((r, n) for r, n in self.adopt_failed.items() if n)),
                lost=sum(self.by_client.lost.values()),
            ),
            migration=self.by_client.migration(
                legacy_requests=self.eras[Era.LEGACY.value], modern_requests=self.eras[Era.MODERN.value]
            ),
        )

    def _lifetime(self) -> Lifetime:
        buckets = self.life_buckets
        mean = self.life_sum_ms / 1000 / self.life_count if self.life_count else None
        return Lifetime(
            count=sum(buckets.values()), median=_quantile(0.5, buckets), p95=_quantile(0.95, buckets), mean=mean
        )


def _quantile(q: float, counts: Mapping[float, int]) -> float | None:
    """The q-quantile of a histogram (bucket upper bound -> count), linear within the bucket.

    Like Prometheus' `histogram_quantile`: the first bucket starts at 0, and a quantile that
    falls in the open-ended `inf` bucket is reported as that bucket's lower bound.
    """
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    cumulative, lower = 0, 0.0
    for upper in _LIFE_BOUNDS.values():
        n = counts.get(upper, 0)
        if n > 0 and cumulative + n >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - cumulative) / n
        cumulative += n
        lower = upper
    return lower


def _churn(clients: Counter[tuple[str, str]]) -> tuple[ClientChurn, ...]:
    """Clients ranked by sessions opened (most first); see `CHURN_FACTOR` for `churning`."""
    total = sum(clients.values())
    ranked = sorted(((key, n) for key, n in clients.items() if n), key=lambda kv: (-kv[1], kv[0]))
    ascending = sorted(n for _, n in ranked)
    result = []
    for (name, version), n in ranked:
        others = _median_without(ascending, n)
        churning = others is not None and n >= CHURN_MIN_SESSIONS and n >= CHURN_FACTOR * others
        result.append(ClientChurn(name=name, version=version, created=n, share=n / total, churning=churning))
    return tuple(result)


def _median_without(ascending: list[int], value: int) -> float | None:
    """The median of a sorted list once one occurrence of `value` is taken out (O(log n))."""
    if len(ascending) < 2:
        return None
    removed = bisect.bisect_left(ascending, value)

    def at(k: int) -> int:  # the k-th element of the list without `removed`
        return ascending[k if k < removed else k + 1]

    size = len(ascending) - 1
    mid = size // 2
    return float(at(mid)) if size % 2 else (at(mid - 1) + at(mid)) / 2


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: object) -> int:
    """A counter value; anything that is not an integer counts as 0 (the reader never fails on data)."""
    if value is None:
        return 0
    try:
        return int(_text(value) if isinstance(value, bytes | str) else str(value))
    except ValueError:
        return 0

