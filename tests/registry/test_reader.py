"""The audit's reader against fakeredis, with data written through the key schema's helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeAsyncRedisConnection, FakeRedis
from redis.asyncio import Redis

from mcp_registry.registry import key_schema
from mcp_registry.registry.reader import read_audit
from mcp_registry.registry.report import AuditReport

PREFIX = "t"
K = key_schema.KeySchema(PREFIX)
NOW = 1_700_000_010.0  # 10 s into a minute
MINUTE = key_schema.minute_of(NOW)
TTL = 180
HOUR = 3600.0


class RecordingConnection(FakeAsyncRedisConnection):
    """Remembers the name of every command sent (pipelined ones too)."""

    commands: ClassVar[list[str]] = []

    def pack_command(self, *args: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return super().pack_command(*args)


@pytest.fixture(params=[True, False], ids=["str", "bytes"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    client = FakeRedis(server=FakeServer(), decode_responses=request.param, connection_class=RecordingConnection)
    RecordingConnection.commands = []
    yield client
    await client.aclose()


async def count(r: Redis, minute: int, field: str, n: int = 1) -> None:
    await r.hincrby(K.minute(minute), field, n)


async def heartbeat(r: Redis, worker: str, at: float, live: int) -> None:
    await r.zadd(K.workers, {worker: at})
    await r.hset(K.worker(worker), mapping={"live": live, "heartbeat": int(at), "started": int(at) - 600})


async def audit(r: Redis, since: float = HOUR, now: float = NOW) -> AuditReport:
    return await read_audit(r, prefix=PREFIX, since_seconds=since, now=now, session_ttl=TTL)


async def seed_traffic(r: Redis) -> None:
    """Two workers A and B over two minutes of the last hour."""
    m1, m2 = MINUTE - 30, MINUTE - 1
    await count(r, m1, key_schema.f_created("A"), 3)
    await count(r, m2, key_schema.f_created("A"), 1)
    await count(r, m2, key_schema.f_created("B"), 2)
    await count(r, m1, key_schema.f_ended("A", "deleted"), 2)
    await count(r, m2, key_schema.f_ended("B", "idle"), 1)
    await count(r, m1, key_schema.f_client("Claude Code", "1.2"), 5)
    await count(r, m2, key_schema.f_client("inspector", "0.9"), 1)
    await count(r, m1, key_schema.f_lookup("local", "pass"), 40)
    await count(r, m1, key_schema.f_lookup("cross_worker", "reject"), 4)
    await count(r, m2, key_schema.f_lookup("cross_worker", "reject"), 1)
    await count(r, m2, key_schema.f_lookup("cross_worker", "ack_delete"), 1)
    await count(r, m1, key_schema.f_lookup("fabricated", "reject"), 2)
    await count(r, m2, key_schema.f_lookup("malformed", "strip"), 3)
    await count(r, m2, key_schema.f_lookup("expired", "reject"), 1)
    await count(r, m1, key_schema.f_reuse("A", "B"), 4)
    await count(r, m2, key_schema.f_reuse("A", "B"), 1)
    await count(r, m2, key_schema.f_reuse("B", "A"), 1)
    await count(r, m1, key_schema.f_requests("legacy"), 60)
    await count(r, m2, key_schema.f_requests("modern"), 20)
    await count(r, m2, key_schema.f_dropped("B", "queue_full"), 7)
    await heartbeat(r, "A", NOW - 5, live=2)
    await heartbeat(r, "B", NOW - 20, live=1)


async def test_counts_sum_every_minute_of_the_window(redis: Redis) -> None:
    await seed_traffic(redis)
    doc = (await audit(redis)).to_json()

    assert doc["window_seconds"] == 3600
    sessions = doc["sessions"]
    assert (sessions["created"], sessions["ended"], sessions["live"]) == (6, 3, 3)
    assert sessions["ended_by_reason"] == {"deleted": 2, "idle": 1, "shutdown": 0, "worker_lost": 0, "handed_over": 0}
    assert doc["lookups"] == {
        "local": 40, "cross_worker": 6, "expired": 1, "fabricated": 2, "malformed": 3, "unverified": 0, "missing": 0,
    }  # fmt: skip
    assert doc["lookup_actions"] == {"pass": 40, "strip": 3, "ack_delete": 1, "reject": 8, "forward": 0, "adopt": 0}
    assert doc["lookup_legitimacy"] == {"legitimate": 47, "not_legitimate": 5, "unverified": 0}
    assert doc["protocol_eras"] == {"legacy": 60, "modern": 20, "legacy_share": 0.75}
    assert doc["dropped_events"] == {"total": 7, "by_worker": [{"worker": "B", "reason": "queue_full", "count": 7}]}
    assert doc["workers"] == ["A", "B"]


async def test_reuse_matrix_and_per_worker_rows(redis: Redis) -> None:
    await seed_traffic(redis)
    doc = (await audit(redis)).to_json()

    assert doc["cross_worker_reuse"] == [
        {"origin": "A", "serving": "B", "count": 5},
        {"origin": "B", "serving": "A", "count": 1},
    ]
    a, b = doc["sessions"]["per_worker"]
    assert a == {
        "worker": "A", "alive": True, "last_heartbeat": NOW - 5, "live": 2, "created": 4, "ended": 2,
        "reuse_issued": 5, "reuse_served": 1,
    }  # fmt: skip
    assert (b["worker"], b["created"], b["ended"], b["reuse_issued"], b["reuse_served"]) == ("B", 2, 1, 1, 5)


async def test_timeline_has_every_minute_with_its_own_counts(redis: Redis) -> None:
    await seed_traffic(redis)
    timeline = (await audit(redis)).to_json()["timeline"]

    assert len(timeline) == 61  # the minute holding now-1h, through the current one
    assert timeline[0]["minute"] == (MINUTE - 60) * 60
    assert timeline[-1]["minute"] == MINUTE * 60
    by_minute = {row["minute"]: row for row in timeline}
    assert by_minute[(MINUTE - 30) * 60] == {
        "minute": (MINUTE - 30) * 60, "created": 3, "ended": 2, "reuse": 4, "fabricated": 2, "malformed": 0,
    }  # fmt: skip
    assert by_minute[(MINUTE - 1) * 60] == {
        "minute": (MINUTE - 1) * 60, "created": 3, "ended": 1, "reuse": 2, "fabricated": 0, "malformed": 3,
    }  # fmt: skip
    assert sum(row["created"] for row in timeline) == 6


async def test_clients_are_ranked_and_heavy_reinitializers_flagged(redis: Redis) -> None:
    await count(redis, MINUTE, key_schema.f_client("looper", "2.0"), 60)
    await count(redis, MINUTE, key_schema.f_client("steady|one", "1.0"), 3)
    await count(redis, MINUTE, key_schema.f_client("steady-two", "1.0"), 2)
    await count(redis, MINUTE, key_schema.f_client("rare", "0.1"), 1)
    clients = (await audit(redis)).to_json()["clients"]

    assert [(c["name"], c["version"], c["created"], c["churning"]) for c in clients] == [
        ("looper", "2.0", 60, True),
        ("steady_one", "1.0", 3, False),  # `|` in an untrusted name was sanitised by the writer's helper
        ("steady-two", "1.0", 2, False),
        ("rare", "0.1", 1, False),
    ]
    assert clients[0]["share"] == pytest.approx(60 / 66)


async def test_a_single_client_is_ranked_but_not_flagged(redis: Redis) -> None:
    await count(redis, MINUTE, key_schema.f_client("only", "1"), 500)
    (client,) = (await audit(redis)).to_json()["clients"]
    assert (client["created"], client["share"], client["churning"]) == (500, 1.0, False)


async def test_lifetime_percentiles_interpolate_within_buckets(redis: Redis) -> None:
    # 4 sessions in (5, 10] s and 4 in (10, 30] s.
    for seconds in (6, 7, 8, 9, 12, 15, 20, 25):
        await count(redis, MINUTE, key_schema.f_lifetime(seconds))
    await count(redis, MINUTE, key_schema.F_LIFE_COUNT, 8)
    await count(redis, MINUTE, key_schema.F_LIFE_SUM_MS, 102_000)
    life = (await audit(redis)).to_json()["lifetime_seconds"]

    assert life["count"] == 8
    assert life["median"] == pytest.approx(10.0)  # rank 4: the top of (5, 10]
    assert life["p95"] == pytest.approx(28.0)  # rank 7.6: 3.6/4 of the way through (10, 30]
    assert life["mean"] == pytest.approx(12.75)


async def test_lifetime_beyond_the_last_bucket_reports_its_lower_bound(redis: Redis) -> None:
    await count(redis, MINUTE, key_schema.f_lifetime(0.2), 1)
    await count(redis, MINUTE, key_schema.f_lifetime(200_000), 99)
    life = (await audit(redis)).to_json()["lifetime_seconds"]
    assert life["median"] == 86400
    assert life["p95"] == 86400


async def test_lifetime_buckets_keep_their_own_bounds_when_others_are_empty(redis: Redis) -> None:
    await count(redis, MINUTE, key_schema.f_lifetime(0.5), 1)  # (0, 1]
    await count(redis, MINUTE, key_schema.f_lifetime(3000), 1)  # (1800, 3600]
    life = (await audit(redis)).to_json()["lifetime_seconds"]
    assert life["median"] == pytest.approx(1.0)
    assert life["p95"] == pytest.approx(1800 + 1800 * 0.9)


async def test_no_ended_session_gives_no_lifetime(redis: Redis) -> None:
    await count(redis, MINUTE, key_schema.f_created("A"))
    life = (await audit(redis)).to_json()["lifetime_seconds"]
    assert life == {"count": 0, "median": None, "p95": None, "mean": None}


async def test_a_worker_that_stopped_heart_beating_has_its_sessions_counted_as_lost(redis: Redis) -> None:
    await heartbeat(redis, "alive", NOW - TTL + 1, live=5)
    await heartbeat(redis, "lost", NOW - TTL - 600, live=3)  # sessions expired ten minutes ago
    await heartbeat(redis, "ancient", NOW - HOUR - TTL - 60, live=7)  # expired before the window
    report = await audit(redis)
    doc = report.to_json()

    assert doc["sessions"]["live"] == 5
    assert doc["sessions"]["ended"] == 3
    assert doc["sessions"]["ended_by_reason"]["worker_lost"] == 3
    assert doc["workers"] == ["alive", "lost"]
    lost = report.workers[1]
    assert (lost.alive, lost.live, lost.ended) == (False, 0, 3)
    expired_minute = key_schema.minute_of(NOW - 600) * 60
    assert [row["ended"] for row in doc["timeline"] if row["minute"] == expired_minute] == [3]


async def test_a_reaped_worker_is_counted_once_from_its_counter(redis: Redis) -> None:
    # The writer reaps a lost worker: it leaves the zset and its sessions become a counter.
    await count(redis, MINUTE - 2, key_schema.f_ended("gone", "worker_lost"), 4)
    await heartbeat(redis, "survivor", NOW - 1, live=0)
    doc = (await audit(redis)).to_json()
    assert doc["sessions"]["ended_by_reason"]["worker_lost"] == 4
    assert doc["workers"] == ["gone", "survivor"]


async def test_the_window_covers_whole_minutes_overlapping_it(redis: Redis) -> None:
    since = 600.0
    first = key_schema.minute_of(NOW - since)
    await count(redis, first - 1, key_schema.f_created("A"), 1000)  # before the window
    await count(redis, first, key_schema.f_created("A"), 1)
    await count(redis, MINUTE, key_schema.f_created("A"), 10)
    await count(redis, MINUTE + 1, key_schema.f_created("A"), 1000)  # the future
    report = await audit(redis, since=since)

    assert report.created == 11
    assert report.window_start == first * 60
    assert len(report.timeline) == 11


async def test_windows_longer_than_a_pipeline_read_every_minute(redis: Redis) -> None:
    since = 3 * 86_400.0
    await count(redis, key_schema.minute_of(NOW - since), key_schema.f_created("A"), 1)
    await count(redis, MINUTE - 1500, key_schema.f_created("A"), 2)
    await count(redis, MINUTE, key_schema.f_created("A"), 4)
    report = await audit(redis, since=since)
    assert report.created == 7
    assert len(report.timeline) == 3 * 1440 + 1


async def test_fields_it_does_not_know_are_ignored(redis: Redis) -> None:
    await redis.hset(
        K.minute(MINUTE),
        mapping={"created|A": "2", "created|B": "not-a-number", "future|x|y": "5", "life|7": "3", "odd": "1"},
    )
    report = await audit(redis)
    assert report.created == 2
    assert report.lifetime.count == 0
    assert report.worker_ids == ("A", "B")


async def test_an_empty_registry_has_no_data(redis: Redis) -> None:
    report = await audit(redis)
    assert not report.has_data
    assert report.to_json()["lookups"] == dict.fromkeys(
        ("local", "cross_worker", "expired", "fabricated", "malformed", "unverified", "missing"), 0
    )


async def test_a_quiet_window_with_a_live_worker_has_data(redis: Redis) -> None:
    await heartbeat(redis, "A", NOW - 1, live=2)
    report = await audit(redis)
    assert report.has_data
    assert report.live == 2


async def test_another_prefix_is_not_read(redis: Redis) -> None:
    await redis.hincrby(key_schema.KeySchema("other").minute(MINUTE), key_schema.f_created("A"), 5)
    assert not (await audit(redis)).has_data


async def test_it_reads_aggregates_only_whatever_the_number_of_sessions(redis: Redis) -> None:
    await seed_traffic(redis)
    RecordingConnection.commands = []
    await audit(redis)
    few_sessions = list(RecordingConnection.commands)

    async with redis.pipeline(transaction=False) as pipe:
        for i in range(5000):
            pipe.set(K.session(f"h{i}"), "A", ex=600)
            pipe.set(K.tombstone(f"t{i}"), "B", ex=600)
        await pipe.execute()
    RecordingConnection.commands = []
    await audit(redis)
    many_sessions = list(RecordingConnection.commands)

    assert many_sessions == few_sessions
    assert not {"SCAN", "KEYS", "SSCAN", "HSCAN", "GET", "EXISTS"} & set(many_sessions)
    assert many_sessions.count("HGETALL") == 61  # one per minute of the window
    assert many_sessions.count("HGET") == 2  # one per worker
    assert not {"SET", "HSET", "HINCRBY", "DEL", "ZADD", "ZREM", "EXPIRE"} & set(many_sessions)


@pytest.mark.parametrize("since", [0.0, -5.0, float("nan"), float("inf")])
async def test_a_window_that_is_not_positive_is_refused(redis: Redis, since: float) -> None:
    with pytest.raises(ValueError, match="since_seconds"):
        await audit(redis, since=since)
