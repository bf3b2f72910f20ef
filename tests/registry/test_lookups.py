"""What a stale id was, from its live key and its tombstone; the answer cache; the rate limit."""

from __future__ import annotations

from mcp_registry.outcomes import Status
from mcp_registry.registry.lookups import CACHE_SECONDS, CACHE_SIZE, AnswerCache, TokenBucket, classify

CLIENT = ("inspector", "0.9")


def test_an_id_live_elsewhere_is_cross_worker_and_our_own_is_expired() -> None:
    live_b, live_a = "worker-b|inspector|0.9", "worker-a|inspector|0.9"
    assert classify(live_b, None, seen_wall=100.0, worker="worker-a") == (Status.CROSS_WORKER, "worker-b", CLIENT)
    assert classify(live_a, None, seen_wall=100.0, worker="worker-a") == (Status.EXPIRED, "worker-a", CLIENT)


def test_a_tombstone_tells_expired_from_ended_after_it_was_used() -> None:
    def tomb(origin: str, ended: str) -> object:
        return classify(None, f"{origin}|{ended}|inspector|0.9", seen_wall=100.0, worker="worker-a")

    assert tomb("worker-b", "90.000") == (Status.EXPIRED, "worker-b", CLIENT)
    assert tomb("worker-b", "101.5") == (Status.CROSS_WORKER, "worker-b", CLIENT)
    assert tomb("worker-a", "101.5") == (Status.EXPIRED, "worker-a", CLIENT)
    assert classify(None, "garbage", seen_wall=100.0, worker="worker-a") == (Status.EXPIRED, "garbage", None)


def test_values_written_before_client_labels_still_classify() -> None:
    """A rolling upgrade: workers of the previous release wrote `origin` and `origin|ended-at`."""
    assert classify("worker-b", None, seen_wall=100.0, worker="worker-a") == (Status.CROSS_WORKER, "worker-b", None)
    assert classify(None, "worker-b|90.000", seen_wall=100.0, worker="worker-a") == (Status.EXPIRED, "worker-b", None)
    assert classify(None, "worker-b|101.5", seen_wall=100.0, worker="worker-a") == (
        Status.CROSS_WORKER, "worker-b", None
    )


def test_nothing_known_is_fabricated() -> None:
    assert classify(None, None, seen_wall=100.0, worker="worker-a") == (Status.FABRICATED, None, None)


def test_answers_are_remembered_briefly_and_boundedly() -> None:
    cache = AnswerCache()
    cache.put("h", "worker-b", None, now=10.0)
    known = cache.get("h", now=10.0 + CACHE_SECONDS)
    assert known is not None
    assert known.live == "worker-b"
    assert cache.get("h", now=10.0 + CACHE_SECONDS + 0.01) is None
    for i in range(CACHE_SIZE + 1):
        cache.put(f"k{i}", None, None, now=10.0)
    assert cache.get("k0", now=10.0) is None
    assert cache.get(f"k{CACHE_SIZE}", now=10.0) is not None


def test_the_bucket_allows_its_rate_with_a_one_second_burst() -> None:
    clock = [0.0]
    bucket = TokenBucket(5, lambda: clock[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock[0] = 0.2  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
