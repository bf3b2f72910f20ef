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
no command spans two slots. This module is the queue and the schedule; each concern lives beside
it: `registry.session_writes` (session keys), `registry.counters` (per-minute counters),
`registry.liveness` (heartbeat, reaping), `registry.lookups` (what an id was, an answer cache, the
rate limit), `registry.health` (episodes, back-off, the reaping grace) and `registry.ops` (every
pipeline, bounded and timed: also the place for an awaited operation beside the background ones).

It receives plain values (`registry.events`) and the ids the worker holds (a callable); it answers
stale-id lookups through the callable each event carries, and changes nothing it does not own.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import RedisError

from mcp_registry.config import RegistryConfig
from mcp_registry.outcomes import DropReason, EndReason, Status
from mcp_registry.registry import key_schema
from mcp_registry.registry.client import (
    REDIS_ERRORS,
    RedisMisconfigured,
    RegistryRedis,
    after_failure,
    connect,
    first_contact,
    misconfiguration,
)
from mcp_registry.registry.counters import MinuteCounters
from mcp_registry.registry.events import Event, SessionOpened, StaleSeen
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.health import RedisHealth
from mcp_registry.registry.liveness import heartbeat_commands, reap
from mcp_registry.registry.lookups import AnswerCache, TokenBucket, classify
from mcp_registry.registry.ops import RedisOps
from mcp_registry.registry.session_writes import Command, SessionWrites
from mcp_registry.telemetry import RequestStats, Telemetry

logger = logging.getLogger(__name__)

MAX_BATCH: Final = 512
"""Events taken from the queue in one pass."""
PIPELINE_CHUNK: Final = 200
"""Commands sent in one pipeline round trip (packing one is event-loop time: keep each short)."""
COUNTER_FLUSH_SECONDS: Final = 5.0
LOOKUP_GRACE_SECONDS: Final = 0.25
"""A stale id is looked up this long after it was seen, so that the worker that just issued it
has written it: a client's second request often reaches another worker within a millisecond."""


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
        live: Callable[[], Collection[str]],
        stats: RequestStats,
        telemetry: Telemetry,
        hasher: IdHasher,
        redis_factory: Callable[[RegistryConfig], RegistryRedis] = connect,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._keys = key_schema.KeySchema(config.prefix)
        self._worker = config.worker_id
        self._live = live
        self._stats = stats
        self._telemetry = telemetry
        self._hasher = hasher
        self._redis_factory = redis_factory
        self._monotonic = monotonic
        self._wall = wall
        self._ops = RedisOps(telemetry, redis_timeout=config.redis_timeout, monotonic=monotonic)
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](config.queue_size)
        self._bucket = TokenBucket(config.lookup_rate, monotonic)
        self._cache = AnswerCache()
        # pending state, sent on the next successful pass
        self._sessions = SessionWrites(
            worker=self._worker, schema=self._keys, hasher=hasher, ttl=config.session_ttl_seconds,
            retention=config.retention_seconds, limit=config.queue_size, monotonic=monotonic,
        )
        self._counters = MinuteCounters(
            worker=self._worker, stats=stats, schema=self._keys, retention_seconds=config.retention_seconds
        )
        self._lookups: deque[StaleSeen] = deque()
        """Pending lookups in arrival order (so the oldest is first)."""
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
            self._drop([event], DropReason.QUEUE_FULL)
            return False
        return True

    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def close(self) -> None:
        """Stop accepting events; `run()` drains what is queued, flushes and returns."""
        self._send.close()
        if not self._running:
            self._drop(list(_drain(self._receive)), DropReason.SHUTDOWN)
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
                    self._abandon_pending(DropReason.SHUTDOWN)
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
        if isinstance(event, StaleSeen):
            self._lookups.append(event)
            if len(self._lookups) > self._config.queue_size:
                self._drop([self._lookups.popleft()], DropReason.BACKLOG_FULL)
        elif isinstance(event, SessionOpened):
            self._counters.opened(event.created_at, event.client.name, event.client.version, adopted=event.adopted)
            self._sessions.open(event)
        else:
            self._counters.ended(event.ended_at, event.reason, event.lifetime)
            if (pushed_out := self._sessions.close(event)) is not None:
                self._drop([pushed_out], DropReason.BACKLOG_FULL)

    # --- one pass of Redis work ----------------------------------------------------------------
    async def _work(self, redis: RegistryRedis, *, final: bool) -> None:
        if self._health.misconfigured is not None:
            self._abandon_pending(DropReason.MISCONFIGURED)
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
        await self._write_sessions(redis)
        if final or now >= self._next_counters:
            await self._counters.flush(redis, self._ops.execute, now=self._wall())
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
            _, agreed = await self._ops.execute(pipe, "key")
            if not isinstance(agreed, str) or not agreed:
                raise RedisError("the registry hash key could not be read back")
            if self._hasher.key is not None and agreed.encode() != self._hasher.key:
                logger.warning("mcp_registry hash key changed in Redis; adopting it")
                self._sessions.forget_hashes()
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
                self._classify_and_answer(h, events, known.live, known.tomb)
            elif self._bucket.take():
                to_query.append(h)
            else:
                self._drop(events, DropReason.RATE_LIMITED)
        if not to_query:
            return
        pipe = redis.pipeline(transaction=False)
        for h in to_query:
            pipe.get(self._keys.session(h))
            pipe.get(self._keys.tombstone(h))
        try:
            replies = await self._ops.execute(pipe, "lookup", batch=len(to_query))
        except BaseException:
            for h in to_query:
                self._finish_unverified(groups[h])
            raise
        for i, h in enumerate(to_query):
            live, tomb = replies[2 * i], replies[2 * i + 1]
            self._cache.put(h, live, tomb, now)
            self._classify_and_answer(h, groups[h], live, tomb)

    def _classify_and_answer(self, h: str, events: list[StaleSeen], live: object, tomb: object) -> None:
        for event in events:
            status, origin, client = classify(live, tomb, seen_wall=event.seen_wall, worker=self._worker)
            event.answer(status, h, origin, client)

    async def _write_sessions(self, redis: RegistryRedis) -> None:
        if not self._sessions.opened and not self._sessions.closed:
            return
        batch = len(self._sessions.opened) + len(self._sessions.closed)
        await self._send_commands(redis, self._sessions.pending_commands(), "sessions", batch)
        self._sessions.written()

    async def _refresh(self, redis: RegistryRedis, *, final: bool) -> None:
        """Sliding expiry of live sessions, the heartbeat, and reaping of lost workers.

        A session key lives three intervals; each is re-asserted once it is 1.5 intervals old, so
        every other pass (half the work of refreshing all) with one interval to spare. After an
        outage or a key change every session is re-asserted at once.
        """
        ttl = self._config.session_ttl_seconds
        now_mono = self._monotonic()
        live = self._live()
        commands = self._sessions.refresh_commands(
            live, every=self._refresh_all, stale_before=now_mono - 1.5 * self._config.refresh_seconds
        )
        due = len(commands)
        now = self._wall()
        commands += heartbeat_commands(
            self._keys, self._worker, live=len(live), now=now, started=self._started_at, ttl=ttl,
            retention=self._config.retention_seconds, final=final,
        )
        replies = await self._send_commands(redis, commands, "refresh", due)
        self._sessions.refreshed(now_mono)
        self._refresh_all = False
        reaping = not final and self._health.may_reap(now_mono)
        if reaping and (lost := [w for w in replies[-1] if w != self._worker]):
            for worker, sessions in await reap(redis, self._ops.execute, self._keys, lost, now - ttl):
                if sessions > 0:
                    self._counters.lost(self._wall(), worker, sessions)
                    self._telemetry.session_ended(EndReason.WORKER_LOST, None, count=sessions)

    async def _send_commands(self, redis: RegistryRedis, commands: list[Command], operation: str,
                             batch: int) -> list[Any]:
        replies: list[Any] = []
        for start in range(0, len(commands), PIPELINE_CHUNK):
            pipe = redis.pipeline(transaction=False)
            for name, args, kwargs in commands[start : start + PIPELINE_CHUNK]:
                getattr(pipe, name)(*args, **kwargs)
            replies += await self._ops.execute(pipe, operation, batch=batch)
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
        self._abandon_pending(DropReason.MISCONFIGURED)

    def _abandon_pending(self, reason: DropReason) -> None:
        """Whatever could not be written is counted, spans are ended (at the end of `run()`, or for good)."""
        self._finish_unverified(self._lookups)
        self._lookups.clear()
        opened, closed = self._sessions.abandon()
        if closed:
            self._drop(closed, reason)
        if opened and self._health.misconfigured is not None:
            self._drop(opened, reason)
        if self._health.misconfigured is not None:
            self._counters.clear()

    # --- lookups' outcomes -----------------------------------------------------------------------
    def _finish_unverified(self, events: Iterable[StaleSeen]) -> None:
        for event in events:
            event.answer(Status.UNVERIFIED, self._hasher.hash(event.session_id), None, None)

    def _drop(self, events: Sequence[Event], reason: DropReason) -> None:
        self._telemetry.dropped(reason, len(events))
        self._finish_unverified(e for e in events if isinstance(e, StaleSeen))
