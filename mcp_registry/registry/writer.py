"""The background writer: the only code that talks to Redis while a worker serves requests.

One task per worker drains one bounded queue. Each pass folds the queued events into pending
state in memory, then (unless Redis is in back-off) sends it in pipelined batches:

- session creations (`SET P:s:{H} <worker> EX ttl`) and ends (`DEL` + tombstone);
- stale-id lookups (`GET P:s:{H}`, `GET P:t:{H}`), deduplicated, cached briefly and
  rate-limited, that classify the id and end the request's span;
- counters, merged per minute and flushed every few seconds (`HINCRBY P:m:<minute>`);
- every refresh interval: the sliding expiry of every session the SDK still holds, the
  worker's heartbeat, and the reaping of workers that stopped heart-beating.

Redis trouble never reaches a request: a failed batch puts the writer in back-off (logged
once per episode), counters stay pending and are sent later, lookups end as `unverified`, and
what cannot be kept is counted as dropped. When Redis answers again the writer re-seeds the
hash key and re-asserts every live session, so a Redis restarted empty recovers by itself.

Works the same on one Redis, a Redis Cluster and a Sentinel-managed master (`registry.client`):
no command spans two slots, and each minute's counters are flushed in a pipeline of their own
(one key, one node), so a node failing mid-flush never gets another minute's increments sent
twice. The pure parts live beside it: `registry.lookups` (what an id was, a short answer cache,
the rate limit) and `registry.health` (episodes, back-off, the reaping grace).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import RedisError

from mcp_registry.config import RegistryConfig
from mcp_registry.registry import keys
from mcp_registry.registry.client import (
    REDIS_ERRORS,
    RedisMisconfigured,
    RegistryRedis,
    after_failure,
    connect,
    first_contact,
    misconfiguration,
)
from mcp_registry.registry.events import Event, SessionClosed, SessionOpened, StaleSeen
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.health import RedisHealth
from mcp_registry.registry.lookups import AnswerCache, TokenBucket, classify
from mcp_registry.sessions import OwnedSession, SessionBook
from mcp_registry.telemetry import EndReason, RequestStats, Status, Telemetry, annotate

logger = logging.getLogger(__name__)

MAX_BATCH: Final = 512
"""Events taken from the queue in one pass."""
PIPELINE_CHUNK: Final = 200
"""Commands sent in one pipeline round trip (packing one is event-loop time: keep each short)."""
COUNTER_FLUSH_SECONDS: Final = 5.0
LOOKUP_GRACE_SECONDS: Final = 0.25
"""A stale id is looked up this long after it was seen, so that the worker that just issued it
has written it: a client's second request often reaches another worker within a millisecond."""
CLIENTS_PER_MINUTE: Final = 100
"""Distinct client labels counted per minute; the rest count as `other` (client names are untrusted)."""
REMOVE_IF_STALE: Final = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) < tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
"""Remove worker ARGV[1] from the workers zset if its heartbeat is older than ARGV[2]."""


def _drain(receive: MemoryObjectReceiveStream[Event]) -> Iterable[Event]:
    while True:
        try:
            yield receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return


class RegistryWriter:
    """Owns the queue and the Redis client; `run()` is its only task."""

    def __init__(
        self,
        config: RegistryConfig,
        *,
        book: SessionBook,
        stats: RequestStats,
        telemetry: Telemetry,
        hasher: IdHasher,
        redis_factory: Callable[[RegistryConfig], RegistryRedis] = connect,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._keys = keys.KeySchema(config.prefix)
        self._worker = config.worker_id
        self._book = book
        self._stats = stats
        self._telemetry = telemetry
        self._hasher = hasher
        self._redis_factory = redis_factory
        self._monotonic = monotonic
        self._wall = wall
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](config.queue_size)
        self._bucket = TokenBucket(config.lookup_rate, monotonic)
        self._cache = AnswerCache()
        # pending state, sent on the next successful pass
        self._opened: list[SessionOpened] = []
        self._closed: list[SessionClosed] = []
        self._lookups: deque[StaleSeen] = deque()
        """Pending lookups in arrival order (so the oldest is first)."""
        self._counters: Counter[tuple[int, str]] = Counter()
        self._client_fields: Counter[int] = Counter()
        self._flushed_stats: dict[str, int] = {}
        # schedule and health
        self._next_refresh = 0.0
        self._refresh_all = True
        self._next_counters = 0.0
        self._health = RedisHealth(grace_seconds=config.session_ttl_seconds, monotonic=monotonic)
        self._started_at = wall()
        self._running = False
        self._contacted = False

    # --- the request side: never blocks, never raises ----------------------------------------
    def submit(self, event: Event) -> bool:
        """Queue an event; when the queue is full, drop it and count it."""
        try:
            self._send.send_nowait(event)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._drop([event], "queue_full")
            return False
        return True

    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def close(self) -> None:
        """Stop accepting events; `run()` drains what is queued, flushes and returns."""
        self._send.close()
        if not self._running:
            self._drop(list(_drain(self._receive)), "shutdown")
            self._receive.close()

    # --- the task ------------------------------------------------------------------------------
    async def run(self) -> None:
        self._running = True
        redis = self._redis_factory(self._config)
        try:
            while True:
                timeout = max(0.0, self._next_wakeup() - self._monotonic())
                events, closed = await self._receive_batch(timeout)
                for event in events:
                    self._absorb(event)
                try:
                    await self._work(redis, final=closed)
                except REDIS_ERRORS as exc:
                    if (wrong := misconfiguration(redis, self._config, exc)) is not None:
                        self._give_up(wrong)
                    else:
                        self._failed(exc)
                        await after_failure(redis)
                except Exception:  # the writer must outlive any bug of its own
                    logger.exception("mcp_registry writer failed; retrying after back-off")
                    self._failed(None)
                if closed:
                    self._abandon_pending("shutdown")
                    return
        finally:
            self._running = False
            self._receive.close()
            with anyio.CancelScope(shield=True):
                await redis.aclose()

    def _next_wakeup(self) -> float:
        wakeups = [self._next_refresh, self._next_counters]
        if self._lookups:
            wakeups.append(self._lookups[0].seen_at + LOOKUP_GRACE_SECONDS)
        soonest = min(wakeups)
        return max(soonest, self._health.backoff_until)

    async def _receive_batch(self, wait: float) -> tuple[list[Event], bool]:
        events: list[Event] = []
        with anyio.move_on_after(wait):
            try:
                events.append(await self._receive.receive())
            except anyio.EndOfStream:
                return events, True
        while len(events) < MAX_BATCH:
            try:
                events.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
            except anyio.EndOfStream:
                return events, True
        return events, False

    # --- folding events into pending state (no I/O) --------------------------------------------
    def _absorb(self, event: Event) -> None:
        limit = self._config.queue_size
        if isinstance(event, StaleSeen):
            self._lookups.append(event)
            if len(self._lookups) > limit:
                self._drop([self._lookups.popleft()], "backlog_full")
        elif isinstance(event, SessionOpened):
            minute = keys.minute_of(event.session.created_at)
            self._counters[(minute, keys.f_created(self._worker))] += 1
            client = keys.f_client(event.client.name, event.client.version)
            if (minute, client) not in self._counters:
                if self._client_fields[minute] >= CLIENTS_PER_MINUTE:
                    client = keys.f_client("other", "other")
                else:
                    self._client_fields[minute] += 1
            self._counters[(minute, client)] += 1
            self._opened.append(event)
            if len(self._opened) > limit:  # the refresh re-asserts live sessions anyway
                self._opened.pop(0)
        else:
            minute = keys.minute_of(event.ended_at)
            self._counters[(minute, keys.f_ended(self._worker, event.reason.value))] += 1
            self._counters[(minute, keys.f_lifetime(event.lifetime))] += 1
            self._counters[(minute, keys.F_LIFE_COUNT)] += 1
            self._counters[(minute, keys.F_LIFE_SUM_MS)] += round(event.lifetime * 1000)
            self._closed.append(event)
            if len(self._closed) > limit:
                self._drop([self._closed.pop(0)], "backlog_full")

    # --- one pass of Redis work ----------------------------------------------------------------
    async def _work(self, redis: RegistryRedis, *, final: bool) -> None:
        if self._health.misconfigured is not None:
            self._abandon_pending("misconfigured")
            return
        now = self._monotonic()
        if not final and self._health.in_backoff(now):
            # Redis is in back-off: nobody waits for a lookup that cannot happen.
            self._finish_unverified(self._lookups)
            self._lookups.clear()
            return
        if not self._contacted:
            await first_contact(redis, self._config)
            self._contacted = True
        refresh_due = final or now >= self._next_refresh
        if self._health.down_since is not None or self._hasher.key is None or (refresh_due and not final):
            # Also once per refresh: an `allkeys-*` eviction policy may have taken the key.
            await self._agree_key(redis)
        await self._resolve_lookups(redis, now, everything=final)
        await self._write_events(redis)
        if final or now >= self._next_counters:
            await self._flush_counters(redis)
            self._next_counters = now + min(COUNTER_FLUSH_SECONDS, self._config.refresh_seconds)
        if final or now >= self._next_refresh:
            await self._refresh(redis, final=final)
            self._next_refresh = now + self._config.refresh_seconds
        self._health.succeeded(dropped=sum(self._stats.dropped.values()))

    async def _agree_key(self, redis: RegistryRedis) -> None:
        """Obtain the deployment's hash key: configured, or agreed once through Redis (SET NX).

        Re-seeded after an outage and on every refresh, so a Redis that restarted empty or evicted
        the key gets back the key the running workers use; if another key won meanwhile, this
        worker adopts it (and re-asserts its sessions under the new hashes).
        """
        if self._config.hash_key is not None:
            self._hasher.key = self._config.hash_key
        else:
            mine = self._hasher.key.decode() if self._hasher.key else secrets.token_hex(32)
            pipe = redis.pipeline(transaction=False)
            pipe.set(self._keys.hash_key, mine, nx=True)
            pipe.get(self._keys.hash_key)
            _, agreed = await self._execute(pipe, "key")
            if not isinstance(agreed, str) or not agreed:
                raise RedisError("the registry hash key could not be read back")
            if self._hasher.key is not None and agreed.encode() != self._hasher.key:
                logger.warning("mcp_registry hash key changed in Redis; adopting it")
                for session in self._book:
                    session.id_hash = None
                self._next_refresh, self._refresh_all = 0.0, True
            self._hasher.key = agreed.encode()
        if self._health.down_since is not None:
            self._next_refresh, self._refresh_all = 0.0, True  # re-assert every live session now

    async def _resolve_lookups(self, redis: RegistryRedis, now: float, *, everything: bool) -> None:
        if not self._lookups:
            return
        due: list[StaleSeen] = []
        while self._lookups and (everything or self._lookups[0].seen_at + LOOKUP_GRACE_SECONDS <= now):
            due.append(self._lookups.popleft())
        if not due:
            return
        groups: dict[str, list[StaleSeen]] = {}
        for event in due:
            groups.setdefault(self._hasher.require(event.session_id), []).append(event)
        to_query: list[str] = []
        for h, events in groups.items():
            known = self._cache.get(h, now)
            if known is not None:
                self._classify_and_finish(h, events, known.live, known.tomb)
            elif self._bucket.take():
                to_query.append(h)
            else:
                self._drop(events, "rate_limited")
        if not to_query:
            return
        pipe = redis.pipeline(transaction=False)
        for h in to_query:
            pipe.get(self._keys.session(h))
            pipe.get(self._keys.tombstone(h))
        try:
            replies = await self._execute(pipe, "lookup", batch=len(to_query))
        except BaseException:
            for h in to_query:
                self._finish_unverified(groups[h])
            raise
        for i, h in enumerate(to_query):
            live, tomb = replies[2 * i], replies[2 * i + 1]
            self._cache.put(h, live, tomb, now)
            self._classify_and_finish(h, groups[h], live, tomb)

    def _classify_and_finish(self, h: str, events: list[StaleSeen], live: object, tomb: object) -> None:
        for event in events:
            status, origin = classify(live, tomb, seen_wall=event.seen_wall, worker=self._worker)
            self._finish([event], status, h, origin)

    async def _write_events(self, redis: RegistryRedis) -> None:
        if not self._opened and not self._closed:
            return
        ttl, retention = self._config.session_ttl_seconds, self._config.retention_seconds
        pipe = redis.pipeline(transaction=False)
        for opened in self._opened:
            pipe.set(self._keys.session(self._hash_of(opened.session)), self._worker, ex=ttl)
            opened.session.refreshed_at = self._monotonic()
        for closed in self._closed:
            h = self._hash_of(closed.session)
            pipe.delete(self._keys.session(h))
            pipe.set(self._keys.tombstone(h), keys.tombstone_value(self._worker, closed.ended_at), ex=retention)
        await self._execute(pipe, "sessions", batch=len(self._opened) + len(self._closed))
        self._opened, self._closed = [], []

    async def _flush_counters(self, redis: RegistryRedis) -> None:
        stats_now = self._stats_fields()
        deltas = Counter(self._counters)
        minute = keys.minute_of(self._wall())
        for name, value in stats_now.items():
            if delta := value - self._flushed_stats.get(name, 0):
                deltas[(minute, name)] += delta
        if not deltas:
            return
        # One pipeline per minute hash: each is one key, so one slot and one node of a cluster, and
        # a minute is pending until its pipeline has succeeded: a node that fails mid-flush never
        # gets another minute's increments sent twice.
        by_minute: dict[int, list[tuple[str, int]]] = {}
        for (m, name), value in sorted(deltas.items()):
            by_minute.setdefault(m, []).append((name, value))
        for m, fields in by_minute.items():
            pipe = redis.pipeline(transaction=False)
            for name, value in fields:
                pipe.hincrby(self._keys.minute(m), name, value)
            pipe.expire(self._keys.minute(m), self._config.retention_seconds)
            await self._execute(pipe, "counters", batch=len(fields))
            for name, _ in fields:
                self._counters.pop((m, name), None)
            self._client_fields.pop(m, None)
            if m == minute:  # (the request-path counts only ever go to the current minute)
                self._flushed_stats = stats_now

    def _stats_fields(self) -> dict[str, int]:
        """The request-path counts as per-minute counter fields (cumulative)."""
        fields: dict[str, int] = {}
        for era, count in self._stats.requests.items():
            fields[keys.f_requests(era.value)] = count
        for (status, action), count in self._stats.lookup_counts().items():
            fields[keys.f_lookup(status.value, action.value)] = count
        for origin, count in self._stats.reuse.items():
            fields[keys.f_reuse(origin, self._worker)] = count
        for reason, count in self._stats.dropped.items():
            fields[keys.f_dropped(self._worker, reason)] = count
        for reason, count in self._stats.forward_failures.items():
            fields[keys.f_forward_failed(self._worker, reason)] = count
        return fields

    async def _refresh(self, redis: RegistryRedis, *, final: bool) -> None:
        """Sliding expiry of live sessions, the heartbeat, and reaping of lost workers.

        A session key lives three intervals; each is re-asserted once it is 1.5 intervals old, so
        every other pass (half the work of refreshing all) with one interval to spare. After an
        outage or a key change every session is re-asserted at once.
        """
        ttl = self._config.session_ttl_seconds
        now_mono = self._monotonic()
        stale_before = now_mono - 1.5 * self._config.refresh_seconds
        due = [s for s in self._book if self._refresh_all or s.refreshed_at <= stale_before]
        commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("set", (self._keys.session(self._hash_of(s)), self._worker), {"ex": ttl}) for s in due
        ]
        now = self._wall()
        worker_key = self._keys.worker(self._worker)
        if final:
            commands += [("zrem", (self._keys.workers, self._worker), {}), ("delete", (worker_key,), {})]
        else:
            commands += [
                ("hset", (worker_key,), {"mapping": {"live": len(self._book), "heartbeat": int(now),
                                                     "started": int(self._started_at)}}),
                ("expire", (worker_key, self._config.retention_seconds), {}),
                ("zadd", (self._keys.workers, {self._worker: now}), {}),
                ("zremrangebyscore", (self._keys.workers, "-inf", now - self._config.retention_seconds), {}),
                ("zrangebyscore", (self._keys.workers, "-inf", now - ttl), {}),
            ]
        replies: list[Any] = []
        for start in range(0, len(commands), PIPELINE_CHUNK):
            pipe = redis.pipeline(transaction=False)
            for name, args, kwargs in commands[start : start + PIPELINE_CHUNK]:
                getattr(pipe, name)(*args, **kwargs)
            replies += await self._execute(pipe, "refresh", batch=len(due))
        for session in due:
            session.refreshed_at = now_mono
        self._refresh_all = False
        reaping = not final and self._health.may_reap(now_mono)
        if reaping and (lost := [w for w in replies[-1] if w != self._worker]):
            await self._reap(redis, lost, now - ttl)

    async def _reap(self, redis: RegistryRedis, lost: Sequence[str], stale_before: float) -> None:
        """Record the sessions of workers that stopped heart-beating as ended (`worker_lost`).

        The removal from `P:workers` decides which live worker does it, so each lost worker is
        counted once; it is atomic with the check that the heartbeat is still stale (one key, so
        one slot of a cluster), so a worker that heart-beats again meanwhile is not reaped.
        """
        for worker in lost:
            worker_key = self._keys.worker(worker)
            pipe = redis.pipeline(transaction=False)
            pipe.eval(REMOVE_IF_STALE, 1, self._keys.workers, worker, stale_before)
            pipe.hget(worker_key, "live")
            removed, live = await self._execute(pipe, "reap")
            if removed and live and int(live) > 0:
                minute = keys.minute_of(self._wall())
                self._counters[(minute, keys.f_ended(worker, EndReason.WORKER_LOST.value))] += int(live)
                self._telemetry.session_ended(EndReason.WORKER_LOST, None, count=int(live))
            if removed:
                await self._execute(redis.pipeline(transaction=False).delete(worker_key), "reap")

    async def _execute(self, pipe: Any, operation: str, *, batch: int = 0) -> list[Any]:
        started = self._monotonic()
        bound = max(1.0, 4 * self._config.redis_timeout)
        try:
            with anyio.fail_after(bound):
                replies: list[Any] = await pipe.execute()
        except BaseException:
            self._telemetry.redis_round_trip(operation, self._monotonic() - started, batch, failed=True)
            raise
        self._telemetry.redis_round_trip(operation, self._monotonic() - started, batch, failed=False)
        return replies

    # --- health ------------------------------------------------------------------------------
    def _failed(self, exc: BaseException | None) -> None:
        self._health.failed(exc, dropped=sum(self._stats.dropped.values()))
        self._finish_unverified(self._lookups)
        self._lookups.clear()

    def _give_up(self, error: RedisMisconfigured) -> None:
        """The URL names the wrong topology: say how to fix it, once, and stop talking to Redis.

        Requests are unaffected; what the registry would have written is counted as dropped."""
        self._health.give_up(str(error))
        self._abandon_pending("misconfigured")

    def _abandon_pending(self, reason: str) -> None:
        """Whatever could not be written is counted, spans are ended (at the end of `run()`, or for good)."""
        self._finish_unverified(self._lookups)
        self._lookups.clear()
        if self._closed:
            self._drop(self._closed, reason)
        if self._opened and self._health.misconfigured is not None:
            self._drop(self._opened, reason)
        self._opened, self._closed = [], []
        if self._health.misconfigured is not None:
            self._counters.clear()
            self._client_fields.clear()

    # --- lookups' outcomes -----------------------------------------------------------------------
    def _finish(self, events: Iterable[StaleSeen], status: Status, h: str | None, origin: str | None) -> None:
        for event in events:
            raw = event.session_id if self._config.record_raw_id else None
            annotate(event.span, status=status, id_hash=h, origin=origin, raw_id=raw)
            event.span.end()
            self._stats.lookups[(status, event.action)] += 1
            if status is Status.CROSS_WORKER and origin is not None:
                self._stats.reuse[origin] += 1

    def _finish_unverified(self, events: Iterable[StaleSeen]) -> None:
        for event in events:
            self._finish([event], Status.UNVERIFIED, self._hasher.hash(event.session_id), None)

    def _drop(self, events: Sequence[Event], reason: str) -> None:
        self._telemetry.dropped(reason, len(events))
        self._finish_unverified(e for e in events if isinstance(e, StaleSeen))

    def _hash_of(self, session: OwnedSession) -> str:
        if session.id_hash is None:
            session.id_hash = self._hasher.require(session.session_id)
        return session.id_hash
