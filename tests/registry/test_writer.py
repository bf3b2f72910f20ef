"""The background writer against fakeredis: what it writes, how it classifies ids, how it survives outages."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mcp_registry.config import RegistryConfig
from mcp_registry.outcomes import Action, EndReason
from mcp_registry.registry import hasher, key_schema
from mcp_registry.registry.events import Answer, ClientInfo, SessionClosed, SessionOpened, StaleSeen
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.writer import LOOKUP_GRACE_SECONDS, RegistryWriter
from mcp_registry.runtime import answer_on
from mcp_registry.sessions import SessionBook
from mcp_registry.telemetry import (
    ATTR_LEGITIMATE,
    ATTR_ORIGIN_WORKER,
    ATTR_STATUS,
    METRIC_QUEUE_DROPPED,
    METRIC_REDIS_DURATION,
    RequestStats,
    Telemetry,
)
from mcp_registry.testing import CapturedTelemetry, capture_telemetry

KEYS = key_schema.KeySchema("mcpreg")


class Worker:
    """One worker's writer, book and telemetry, sharing a fake Redis server with other workers."""

    def __init__(
        self, server: fakeredis.FakeServer, name: str, redis_class: type[Redis] = fakeredis.FakeAsyncRedis,
        **config: Any,
    ) -> None:
        self.live: dict[str, object] = {}
        config.setdefault("refresh_seconds", 1.0)
        self.config = RegistryConfig(enabled=True, worker_id=name, **config)
        self.book = SessionBook(self.live)
        self.stats = RequestStats()
        self.captured: CapturedTelemetry = capture_telemetry()
        self.telemetry = Telemetry(
            worker_id=name,
            stats=self.stats,
            live_sessions=lambda: len(self.book),
            queue_depth=lambda: 0,
            tracer_provider=self.captured.tracer_provider,
            meter_provider=self.captured.meter_provider,
        )
        self.hasher = IdHasher(self.config.hash_key)
        self.server = server
        self.redis_class = redis_class
        self.writer = RegistryWriter(
            self.config,
            live=self.book.ids,
            stats=self.stats,
            telemetry=self.telemetry,
            hasher=self.hasher,
            redis_factory=self._redis,
        )

    def _redis(self, _: RegistryConfig) -> Redis:
        return self.redis_class(server=self.server, decode_responses=True)  # type: ignore[call-arg]

    def open(
        self, session_id: str, client: str = "inspector", takeover: tuple[str, str] | None = None,
        *, adopted: bool = False,
    ) -> None:  # fmt: skip
        self.live[session_id] = object()
        session = self.book.opened(session_id)
        info = ClientInfo(client, "1.0", "2025-11-25")
        self.writer.submit(SessionOpened(session_id, session.created_at, info, takeover, adopted=adopted))

    def delete(self, session_id: str, lifetime: float = 12.0) -> None:
        self.live.pop(session_id)
        session = self.book.closed(session_id)
        assert session is not None
        self.writer.submit(SessionClosed(session_id, EndReason.DELETED, lifetime, self.book.now()))

    def stale(self, session_id: str, action: Action = Action.REJECT, *, seen_ago: float = 0.0) -> None:
        self.writer.submit(
            StaleSeen(session_id, action, self.answer(action), time.monotonic() - seen_ago, self.book.now() - seen_ago)
        )

    def answer(self, action: Action = Action.REJECT) -> Answer:
        """The answer the runtime gives a lookup: the request's span, annotated and ended, and the counts."""
        span = self.captured.tracer_provider.get_tracer("t").start_span("mcp_registry.session.resolve")
        return answer_on(span, action, self.stats, raw_id=None)

    async def written(self, *session_ids: str) -> bool:
        """Whether the live keys of these sessions are in Redis (under the deployment's hash)."""
        redis = fakeredis.FakeAsyncRedis(server=self.server, decode_responses=True)
        hashes = [self.hasher.hash(sid) for sid in session_ids]
        if None in hashes:
            return False
        found = await redis.exists(*(KEYS.session(h) for h in hashes if h is not None))
        await redis.aclose()
        return bool(found == len(session_ids))

    def statuses(self) -> list[tuple[str, str | None]]:
        out = []
        for span in self.captured.spans():
            assert span.attributes is not None
            origin = span.attributes.get(ATTR_ORIGIN_WORKER)
            out.append((str(span.attributes[ATTR_STATUS]), None if origin is None else str(origin)))
        return out


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> Redis:
    return fakeredis.FakeAsyncRedis(server=server, decode_responses=True)


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(worker.writer.run)
        try:
            yield
        finally:
            for worker in workers:
                worker.writer.close()


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await _value(condition()):
            await anyio.sleep(0.01)


async def _value(value: Any) -> Any:
    return await value if hasattr(value, "__await__") else value


async def minute_counters(redis: Redis) -> dict[str, int]:
    totals: dict[str, int] = {}
    async for key in redis.scan_iter(match="mcpreg:m:*"):
        for field, value in (await redis.hgetall(key)).items():
            totals[str(field)] = totals.get(str(field), 0) + int(value)
    return totals


async def test_a_new_session_is_written_under_its_hash_with_a_ttl(server: fakeredis.FakeServer, redis: Redis) -> None:
    a = Worker(server, "worker-a")
    async with running(a):
        a.open("secret-session-id-1")
        await until(lambda: a.written("secret-session-id-1"))
        h = a.hasher.require("secret-session-id-1")
        await until(lambda: redis.exists(KEYS.session(h)))
        assert await redis.get(KEYS.session(h)) == "worker-a|inspector|1.0"  # its owner and its client
        assert 0 < await redis.ttl(KEYS.session(h)) <= a.config.session_ttl_seconds
    stored = [k async for k in redis.scan_iter()]
    assert not any("secret-session-id" in k for k in stored)
    counters = await minute_counters(redis)
    assert counters["created|worker-a"] == 1
    assert counters["client|inspector|1.0"] == 1


async def test_workers_agree_on_one_hash_key_through_redis(server: fakeredis.FakeServer) -> None:
    a, b = Worker(server, "worker-a"), Worker(server, "worker-b")
    async with running(a, b):
        await until(lambda: a.hasher.key is not None and b.hasher.key is not None)
    assert a.hasher.key == b.hasher.key
    assert a.hasher.hash("x") == b.hasher.hash("x")


async def test_an_operator_key_is_used_and_never_stored(server: fakeredis.FakeServer, redis: Redis) -> None:
    a = Worker(server, "worker-a", hash_key=b"kVrpzGKLbLcnI-dUJl9XR-PHsAD1lFdY4Z1EVoiITEI")
    async with running(a):
        a.open("sid")
        operator_key = a.config.hash_key
        assert operator_key is not None
        await until(lambda: redis.exists(KEYS.session(hasher.id_hash(operator_key, "sid"))))
    assert await redis.get(KEYS.hash_key) is None


async def test_stale_ids_are_classified_cross_worker_expired_or_fabricated(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    a, b = Worker(server, "worker-a"), Worker(server, "worker-b")
    async with running(a, b):
        a.open("live-on-a")
        a.open("ended-on-a")
        await until(lambda: a.written("live-on-a", "ended-on-a"))
        a.delete("ended-on-a")
        await until(lambda: redis.exists(KEYS.tombstone(a.hasher.require("ended-on-a"))))
        b.stale("live-on-a")
        b.stale("ended-on-a", Action.ACK_DELETE)
        b.stale("never-issued")
        await until(lambda: len(b.captured.spans()) == 3)
    assert sorted(b.statuses()) == [
        ("cross_worker", "worker-a"),
        ("expired", "worker-a"),
        ("fabricated", None),
    ]
    legit = {str(s.attributes[ATTR_STATUS]): s.attributes[ATTR_LEGITIMATE] for s in b.captured.spans()}  # type: ignore[index]
    assert legit == {"cross_worker": True, "expired": True, "fabricated": False}
    assert b.stats.reuse == {"worker-a": 1}


async def test_a_lost_session_is_counted_under_the_client_that_opened_it(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    """The migration view: a 404 to an id the registry knows is a session its client lost."""
    a, b = Worker(server, "worker-a"), Worker(server, "worker-b")
    async with running(a, b):
        a.open("live-on-a", client="claude-code")
        a.open("ended-on-a", client="cursor")
        await until(lambda: a.written("live-on-a", "ended-on-a"))
        a.delete("ended-on-a")
        await until(lambda: redis.exists(KEYS.tombstone(a.hasher.require("ended-on-a"))))
        b.stale("live-on-a")  # spec policy: the SDK answers 404 here
        b.stale("ended-on-a")
        b.stale("ended-on-a", Action.ACK_DELETE)  # a DELETE of it gets 200: nothing lost
        b.stale("live-on-a", Action.STRIP)  # an initialize with it gets a fresh session: nothing lost
        b.stale("never-issued")  # nobody's session
        await until(lambda: len(b.captured.spans()) == 5)
        assert b.stats.client_lost == {("claude-code", "1.0"): 1, ("cursor", "1.0"): 1}
        await until(lambda: minute_counters(redis), timeout=10)
        await until(lambda: _has(redis, "clost|cursor|1.0"), timeout=10)
    counters = await minute_counters(redis)
    assert counters["clost|claude-code|1.0"] == 1
    assert counters["clost|cursor|1.0"] == 1


async def _has(redis: Redis, field: str) -> bool:
    return field in await minute_counters(redis)


async def test_an_id_used_elsewhere_before_its_end_counts_as_cross_worker(server: fakeredis.FakeServer) -> None:
    """The lookup runs after a grace period; an id that ended in between was still live when used."""
    a, b = Worker(server, "worker-a"), Worker(server, "worker-b")
    async with running(a, b):
        a.open("short-lived")
        await until(lambda: a.written(*a.book.ids()))
        b.stale("short-lived", seen_ago=0.01)  # seen while live ...
        a.delete("short-lived")  # ... then ended before b looks it up
        await until(lambda: len(b.captured.spans()) == 1, timeout=5 + LOOKUP_GRACE_SECONDS)
    assert b.statuses() == [("cross_worker", "worker-a")]


async def test_a_flood_of_one_id_costs_one_lookup(server: fakeredis.FakeServer) -> None:
    b = Worker(server, "worker-b")
    async with running(b):
        await until(lambda: b.hasher.key is not None)
        for _ in range(500):
            b.stale("the-same-made-up-id")
        await until(lambda: len(b.captured.spans()) == 500)
    assert {s for s, _ in b.statuses()} == {"fabricated"}
    lookups = b.captured.metric_total(METRIC_REDIS_DURATION, mcp_registry__redis__operation="lookup")
    assert 1 <= lookups <= 2  # deduplicated in the batch, then answered from the short cache


async def test_lookups_beyond_the_rate_limit_are_unverified_and_counted(server: fakeredis.FakeServer) -> None:
    b = Worker(server, "worker-b", lookup_rate=5.0)
    async with running(b):
        await until(lambda: b.hasher.key is not None)
        for i in range(50):
            b.stale(f"made-up-{i}")
        await until(lambda: len(b.captured.spans()) == 50)
    statuses = [s for s, _ in b.statuses()]
    assert statuses.count("fabricated") <= 10
    assert statuses.count("unverified") >= 40
    assert b.stats.dropped["rate_limited"] == statuses.count("unverified")
    assert b.captured.metric_total(METRIC_QUEUE_DROPPED) == statuses.count("unverified")


async def test_a_full_queue_drops_and_counts_but_never_blocks(server: fakeredis.FakeServer) -> None:
    b = Worker(server, "worker-b", queue_size=10)
    # The writer is not running: the queue fills up, and submit still returns at once (it is not async).
    accepted = [b.writer.submit(StaleSeen(f"id-{i}", Action.REJECT, b.answer(), 0.0, 0.0)) for i in range(25)]
    assert accepted.count(True) == 10
    assert b.stats.dropped["queue_full"] == 15
    assert [s for s, _ in b.statuses()] == ["unverified"] * 15
    b.writer.close()  # a writer that never ran drops what it queued, and says so
    assert b.stats.dropped["shutdown"] == 10


async def test_an_outage_loses_no_counts_and_is_logged_once(
    server: fakeredis.FakeServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = Worker(server, "worker-a")
    caplog.set_level(logging.WARNING, logger="mcp_registry")
    async with running(a):
        await until(lambda: a.hasher.key is not None)
        server.connected = False
        for i in range(5):
            a.open(f"during-outage-{i}")
            a.stale(f"unknown-{i}")
        await until(lambda: len(a.captured.spans()) == 5)
        assert {s for s, _ in a.statuses()} == {"unverified"}
        server.connected = True
        await until(lambda: _count(redis, "created|worker-a", 5), timeout=15)
        hashes = [a.hasher.require(f"during-outage-{i}") for i in range(5)]
        await until(lambda: _all_exist(redis, [KEYS.session(h) for h in hashes]), timeout=15)
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1
    assert any("is back" in r.getMessage() for r in caplog.records)


async def _count(redis: Redis, field: str, expected: int) -> bool:
    return (await minute_counters(redis)).get(field, 0) == expected


async def _all_exist(redis: Redis, names: list[str]) -> bool:
    return bool(await redis.exists(*names) == len(names))


async def test_live_sessions_come_back_after_redis_restarts_empty(server: fakeredis.FakeServer, redis: Redis) -> None:
    a = Worker(server, "worker-a")
    async with running(a):
        a.open("survivor")
        await until(lambda: a.written(*a.book.ids()))
        h = a.hasher.require("survivor")
        key_before = a.hasher.key
        await until(lambda: redis.exists(KEYS.session(h)))
        await redis.flushall()  # what a restart without persistence leaves
        await until(lambda: redis.exists(KEYS.session(h)), timeout=10)  # the refresh re-asserts it
    assert a.hasher.key == key_before


async def test_a_lost_worker_has_its_sessions_ended_once(server: fakeredis.FakeServer, redis: Redis) -> None:
    now = time.time()
    await redis.zadd(KEYS.workers, {"worker-dead": now - 3600})
    await redis.hset(KEYS.worker("worker-dead"), mapping={"live": 7, "heartbeat": int(now - 3600)})
    a, b = Worker(server, "worker-a"), Worker(server, "worker-b")
    async with running(a, b):
        await until(lambda: _count(redis, "ended|worker-dead|worker_lost", 7), timeout=10)
    assert await redis.zscore(KEYS.workers, "worker-dead") is None
    assert (await minute_counters(redis))["ended|worker-dead|worker_lost"] == 7


async def test_shutdown_flushes_ends_and_removes_the_worker(server: fakeredis.FakeServer, redis: Redis) -> None:
    a = Worker(server, "worker-a")
    async with running(a):
        a.open("held")
        await until(lambda: a.written(*a.book.ids()))
        session = a.book.close_all()[0]
        a.writer.submit(SessionClosed(session.session_id, EndReason.SHUTDOWN, 3.0, a.book.now()))
    h = a.hasher.require("held")
    assert await redis.exists(KEYS.session(h)) == 0
    assert str(await redis.get(KEYS.tombstone(h))).startswith("worker-a|")
    counters = await minute_counters(redis)
    assert counters["ended|worker-a|shutdown"] == 1
    assert counters["life|5"] == 1
    assert await redis.zscore(KEYS.workers, "worker-a") is None


async def test_a_held_session_key_never_lapses_between_refreshes(server: fakeredis.FakeServer, redis: Redis) -> None:
    """Keys live three intervals and are re-asserted every other pass: one interval to spare."""
    a = Worker(server, "worker-a", refresh_seconds=0.3)  # TTL 1 s
    async with running(a):
        a.open("held")
        await until(lambda: a.written(*a.book.ids()))
        key = KEYS.session(a.hasher.require("held"))
        await until(lambda: redis.exists(key))
        deadline = time.monotonic() + 3.0  # ten refresh intervals, three TTLs
        while time.monotonic() < deadline:
            assert await redis.exists(key), "the live key lapsed while its worker held the session"
            await anyio.sleep(0.05)


async def test_a_session_adopted_elsewhere_is_never_claimed_back_by_its_old_owner(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    """Takeover: while its old owner drains (SIGTERM), another worker adopts the session and names itself in
    the live key. The old owner's refreshes and its handover must not name the old owner again: a worker
    reading the key would take the session over a second time (two owners of one session)."""
    a = Worker(server, "worker-a", refresh_seconds=0.3)
    adopter = "worker-b|inspector|1.0|tcp:worker-b-route|handshake"
    async with running(a):
        a.open("held", takeover=("tcp:worker-a-route", "handshake"))
        await until(lambda: a.written("held"))
        key = KEYS.session(a.hasher.require("held"))
        await redis.set(key, adopter, ex=60)  # what `TakeoverStore.publish` writes for the adopter
        deadline = time.monotonic() + 1.5  # five refresh intervals of the old owner, still holding it
        while time.monotonic() < deadline:
            assert await redis.get(key) == adopter, "the old owner named itself again"
            await anyio.sleep(0.05)
        session = a.book.close_all()[0]
        a.writer.submit(SessionClosed(session.session_id, EndReason.HANDED_OVER, 3.0, a.book.now()))
    assert await redis.get(key) == adopter, "its handover did not undo the adoption"


async def test_an_adopter_names_itself_even_when_its_own_publish_did_not_reach_redis(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    a = Worker(server, "worker-a")
    async with running(a):
        await until(lambda: a.hasher.key is not None)
        key = KEYS.session(a.hasher.require("held"))
        await redis.set(key, "worker-gone|inspector|1.0|tcp:gone-route|handshake", ex=60)
        a.open("held", takeover=("tcp:worker-a-route", "handshake"), adopted=True)
        await until(lambda: _starts(redis, key, "worker-a|"))
    assert await redis.get(key) == "worker-a|inspector|1.0|tcp:worker-a-route|handshake"


async def _starts(redis: Redis, key: str, prefix: str) -> bool:
    return str(await redis.get(key)).startswith(prefix)


async def test_a_handed_over_session_keeps_its_live_key_and_no_tombstone(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    a = Worker(server, "worker-a", refresh_seconds=0.3)
    async with running(a):
        a.open("held", takeover=("tcp:worker-a-route", "handshake"))
        await until(lambda: a.written("held"))
        key = KEYS.session(a.hasher.require("held"))
        session = a.book.close_all()[0]
        a.writer.submit(SessionClosed(session.session_id, EndReason.HANDED_OVER, 3.0, a.book.now()))
    assert await redis.get(key) == "worker-a|inspector|1.0|tcp:worker-a-route|handshake"
    assert await redis.exists(KEYS.tombstone(a.hasher.require("held"))) == 0


class ClusterNodeAsPlainRedis(fakeredis.FakeAsyncRedis):
    """What a `redis://` URL gets from a Redis Cluster node: `INFO cluster` says cluster_enabled:1."""

    async def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if section == "cluster":
            return {"cluster_enabled": 1}
        return dict(await super().info(section, *args, **kwargs))


async def test_a_plain_url_at_a_cluster_node_turns_the_registry_off_with_the_fix(
    server: fakeredis.FakeServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = Worker(server, "worker-a", ClusterNodeAsPlainRedis, hash_key=b"68jDfM2gbFZaaV1r-oLA99FPW390oFGfiZXYafU70Ak")
    caplog.set_level(logging.WARNING, logger="mcp_registry")
    async with running(a):
        a.open("s-1")
        a.stale("made-up")
        await until(lambda: a.stats.dropped.get("misconfigured", 0) >= 1)
        a.open("s-2")
        await until(lambda: a.stats.dropped.get("misconfigured", 0) >= 2)
        await until(lambda: len(a.captured.spans()) == 1)
    assert a.statuses() == [("unverified", None)]  # nobody waits for a lookup that will never happen
    assert await redis.dbsize() == 0  # nothing half-written to the one node
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "reaches a Redis Cluster node" in errors[0]
    assert "use redis+cluster://host:port" in errors[0]
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


class FailsOneMinuteOnce(fakeredis.FakeAsyncRedis):
    """The first pipeline that touches `key` fails as a cluster pipeline does when the node holding
    `key` dies: the commands for the other nodes are applied, then the error is raised."""

    key = ""
    failed = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def failing_once(raise_on_error: bool = True) -> Any:
            touched = [self.key in map(str, args) for args, _ in pipe.command_stack]
            if any(touched) and not FailsOneMinuteOnce.failed:
                FailsOneMinuteOnce.failed += 1
                others = super(FailsOneMinuteOnce, self).pipeline(transaction=False)
                for (args, options), touches in zip(pipe.command_stack, touched, strict=True):
                    if not touches:
                        others.execute_command(*args, **options)
                await others.execute()
                raise ConnectionError("the node holding this minute died")
            return await execute(raise_on_error)

        pipe.execute = failing_once  # type: ignore[method-assign]
        return pipe


async def test_counters_of_a_minute_whose_node_failed_are_sent_once_more_and_no_other_twice(
    server: fakeredis.FakeServer, redis: Redis
) -> None:
    now = time.time()
    earlier, later = key_schema.minute_of(now - 120), key_schema.minute_of(now)
    FailsOneMinuteOnce.key, FailsOneMinuteOnce.failed = KEYS.minute(later), 0
    a = Worker(server, "worker-a", FailsOneMinuteOnce, hash_key=b"68jDfM2gbFZaaV1r-oLA99FPW390oFGfiZXYafU70Ak")
    async with running(a):
        for name, ended_at in (("old", now - 120), ("new", now)):
            a.open(name)
            session = a.book.closed(name)
            assert session is not None
            a.writer.submit(SessionClosed(name, EndReason.DELETED, 1.0, ended_at))
        await until(lambda: redis.hget(KEYS.minute(later), "ended|worker-a|deleted"), timeout=15)
    assert FailsOneMinuteOnce.failed == 1
    assert await redis.hget(KEYS.minute(earlier), "ended|worker-a|deleted") == "1"  # not twice
    assert await redis.hget(KEYS.minute(later), "ended|worker-a|deleted") == "1"


async def test_after_an_outage_the_others_get_a_ttl_to_come_back_before_being_reaped(
    server: fakeredis.FakeServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover cuts every worker off at once; the first one back must not reap the others."""
    caplog.set_level(logging.WARNING, logger="mcp_registry")
    a = Worker(server, "worker-a", refresh_seconds=0.5)  # session TTL and grace: 2 s
    async with running(a):
        await until(lambda: redis.zscore(KEYS.workers, "worker-a"))
        await redis.zadd(KEYS.workers, {"worker-b": time.time()})
        await redis.hset(KEYS.worker("worker-b"), mapping={"live": 5})
        server.connected = False
        outage = time.time()
        await until(lambda: any("unavailable" in r.getMessage() for r in caplog.records))
        await until(lambda: time.time() > outage + 2.5, timeout=10)  # every heartbeat is stale now
        server.connected = True
        first = await _next_heartbeat(redis, "worker-a", after=outage)
        second = await _next_heartbeat(redis, "worker-a", after=first)  # (both inside the grace)
        assert await redis.zscore(KEYS.workers, "worker-b") is not None, "reaped while still in the grace"
        await redis.zadd(KEYS.workers, {"worker-b": time.time()})  # worker-b is back
        await _next_heartbeat(redis, "worker-a", after=second + 2.0)  # a refresh after the grace
        assert await redis.zscore(KEYS.workers, "worker-b") is not None
        assert "ended|worker-b|worker_lost" not in await minute_counters(redis)
        # The reaper still works: worker-b, silent for a TTL after the grace, is lost.
        await until(lambda: _count(redis, "ended|worker-b|worker_lost", 5), timeout=10)


async def _next_heartbeat(redis: Redis, worker: str, *, after: float) -> float:
    """Wait (bounded) for `worker`'s heartbeat newer than `after`; return it."""
    with anyio.fail_after(10):
        while True:
            with contextlib.suppress(RedisConnectionError):
                score = await redis.zscore(KEYS.workers, worker)
                if score is not None and score > after:
                    return float(score)
            await anyio.sleep(0.05)
