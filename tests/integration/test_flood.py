"""Floods and hostile requests against a real `redis-server` and real worker processes.

- A flood of 2·10^4 distinct made-up ids (pipelined HTTP/1.1 over 8 connections, the same flood
  `python -m bench.faults` runs at 10^5): every request gets the SDK's 404, the worker's memory
  does not grow with it, Redis sees far fewer lookups than requests (rate-limited and batched),
  and what was not looked up is counted. One made-up id repeated is looked up once or twice.
- A stale DELETE on one worker is answered there and leaves another worker's session alone.
- Bodies read on the rare path (a stale id on a POST) stay within the SDK's body limit (413 from
  the SDK above it) and reach the SDK unchanged.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Final

import anyio
import httpx
import pytest
import redis
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

from bench.faults import FloodResult, distinct_ids, flood, rss_bytes
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ENV_LOOKUP_RATE
from mcp_registry.testing import LEGACY_VERSION, initialize_request, session_headers, tool_call
from tests.integration.test_faults import (
    DROP_REASON,
    DROPPED,
    LOOKUPS,
    RECOVERY_BOUND,
    REFRESH_SECONDS,
    STATUS,
    StartCluster,
    Workers,
    poll,
    registry_env,
    session_owners,
    start_workers,
)

pytestmark = pytest.mark.integration

FLOOD: Final = 20_000
"""Made-up ids in the test's flood (`python -m bench.faults` floods 10^5)."""
PLAIN: Final = 5_000
LOOKUP_RATE: Final = 100
FLOOD_BOUND: Final = 60.0
MiB: Final = 1024 * 1024
BATCH_SIZE: Final = "mcp_registry_writer_batch_size"
OPERATION: Final = "mcp_registry_redis_operation"


def get_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def run_flood(url: str, total: int, ids: Callable[[int], str] | None) -> FloodResult:
    async def bounded() -> FloodResult:
        with anyio.fail_after(FLOOD_BOUND):
            return await flood(url, total, ids)

    return anyio.run(bounded)


def lookups_counted(workers: Workers, expected: int, started: float) -> float:
    """Wait until worker-0 has classified `expected` lookups; the seconds since `started`."""
    poll(lambda: workers.metric(0, LOOKUPS), lambda n: n >= expected, bound=RECOVERY_BOUND)
    assert workers.metric(0, LOOKUPS) == expected
    return time.monotonic() - started


def test_a_flood_of_made_up_ids_is_answered_and_costs_neither_memory_nor_redis(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    env = registry_env(redis_server.url, **{ENV_LOOKUP_RATE: str(LOOKUP_RATE)})
    workers = start_workers(worker_cluster, 1, env)
    url, pid = workers.urls[0], workers.cluster.pids[0]
    r = redis.Redis.from_url(redis_server.url)

    warm = run_flood(url, 1_000, None)
    rss_start = rss_bytes(pid)
    plain = run_flood(url, PLAIN, None)
    rss_plain = rss_bytes(pid)
    local = workers.metric(0, LOOKUPS)  # the plain calls: this worker's own sessions

    gets_before, started = get_calls(r), time.monotonic()
    first = run_flood(url, FLOOD // 2, distinct_ids("flood-a"))
    rss_half = rss_bytes(pid)
    second = run_flood(url, FLOOD // 2, distinct_ids("flood-b"))
    rss_end = rss_bytes(pid)
    seconds = lookups_counted(workers, int(local) + FLOOD, started)
    gets = get_calls(r) - gets_before

    assert warm.statuses == {200: 1_000}
    assert plain.statuses == {200: PLAIN}
    assert first.statuses == second.statuses == {404: FLOOD // 2}
    assert first.seconds + second.seconds < FLOOD_BOUND
    # Memory: the second half of the flood adds nothing that grows per id, and the whole flood
    # adds no more than plain calls on own sessions did (plus allocator noise).
    assert rss_end - rss_half < 2 * MiB, f"RSS grew {(rss_end - rss_half) / MiB:.1f} MiB in the second half"
    assert rss_end - rss_plain < max(0, rss_plain - rss_start) + 3 * MiB
    # Redis: two GETs (live key, tombstone) per lookup, at most LOOKUP_RATE lookups a second
    # (plus one second of burst), batched into pipelines; and the refresh's GET of the hash key.
    fabricated = workers.metric(0, LOOKUPS, **{STATUS: "fabricated"})
    unverified = workers.metric(0, LOOKUPS, **{STATUS: "unverified"})
    assert fabricated <= LOOKUP_RATE * (seconds + 1)
    assert gets <= 2 * fabricated + seconds / REFRESH_SECONDS + 3, f"{gets} GETs in {seconds:.1f}s"
    assert gets * 10 < FLOOD
    assert fabricated + unverified == FLOOD  # every request counted once
    skipped = workers.metric(0, DROPPED, **{DROP_REASON: "rate_limited"}) + workers.metric(
        0, DROPPED, **{DROP_REASON: "queue_full"}
    )
    assert skipped == unverified  # what was not looked up is counted, by reason
    batches = workers.metric(0, f"{BATCH_SIZE}_count", **{OPERATION: "lookup"})
    looked_up = workers.metric(0, f"{BATCH_SIZE}_sum", **{OPERATION: "lookup"})
    assert looked_up == fabricated
    assert looked_up > batches, "no pipeline carried more than one lookup"


def test_one_made_up_id_repeated_is_looked_up_once_per_cache_period(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    workers = start_workers(worker_cluster, 1, registry_env(redis_server.url))
    r = redis.Redis.from_url(redis_server.url)
    same = f"made-up-{secrets.token_hex(16)}"
    gets_before, started = get_calls(r), time.monotonic()
    result = run_flood(workers.urls[0], 5_000, lambda _: same)
    seconds = lookups_counted(workers, 5_000, started)
    assert result.statuses == {404: 5_000}
    assert workers.metric(0, LOOKUPS, **{STATUS: "fabricated"}) == 5_000
    assert workers.metric(0, DROPPED) == 0
    # One lookup (two GETs) per 2 s the answer stays cached, and the refresh's GET of the hash key.
    assert get_calls(r) - gets_before <= 2 * (seconds / 2.0 + 2) + seconds / REFRESH_SECONDS + 3


# --- stale DELETE --------------------------------------------------------------------------------
def test_a_stale_delete_is_answered_here_and_leaves_the_other_workers_session_alone(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    a, b = workers.urls
    call = tool_call("add", {"a": 2, "b": 2})
    with httpx.Client(timeout=10) as http:
        opened = {}
        for url in (a, b):
            response = http.post(url + "/mcp", json=initialize_request("delete-test"), headers=session_headers(None))
            assert response.status_code == 200
            opened[url] = response.headers["mcp-session-id"]
        recorded = poll(lambda: session_owners(redis_server.url, [opened[a]]), lambda o: o[opened[a]] is not None,
                        bound=RECOVERY_BOUND)  # fmt: skip
        assert recorded == {opened[a]: "worker-0"}

        for stale in (opened[a], "made-up-id-for-delete", "not an id"):
            deleted = http.delete(b + "/mcp", headers=session_headers(stale))
            assert (deleted.status_code, deleted.content) == (200, b""), stale

        for url in (a, b):  # both sessions still work, on the workers that hold them
            response = http.post(url + "/mcp", json=call, headers=session_headers(opened[url]))
            assert response.status_code == 200
            assert '"text":"4"' in response.text
    assert session_owners(redis_server.url, [opened[a]]) == {opened[a]: "worker-0"}  # no tombstone, no DEL
    poll(lambda: workers.metric(1, LOOKUPS, mcp_registry_session_action="ack_delete"), lambda n: n >= 3, bound=10)
    assert workers.metric(1, LOOKUPS, mcp_registry_session_action="ack_delete") == 3
    assert workers.metric(0, LOOKUPS, mcp_registry_session_action="ack_delete") == 0


# --- bodies on the rare path ---------------------------------------------------------------------
def chunks(body: bytes, size: int) -> Iterator[bytes]:
    """The body in pieces of an odd size, so that pieces split multi-byte UTF-8 characters."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def odd_initialize(size: int) -> tuple[bytes, str]:
    """An `initialize` of exactly `size` bytes: odd whitespace between tokens, a long unicode
    JSON-RPC id (which the SDK echoes in its response)."""
    head = '\t{ "jsonrpc"\r\n:\t"2.0" ,\n\n "method" : "initialize" ,\r\n "params":' + json.dumps(
        {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "bodies", "version": "1"}}
    )
    before_id, after_id = ' ,\t"id" :\r\n "', '"\n}\r\n\t '
    unit = "ünïcødé ✓ 😀 ∑ "
    room = size - len((head + before_id + after_id).encode())
    text = unit * (room // len(unit.encode()))
    text += "x" * (room - len(text.encode()))
    body = (head + before_id + text + after_id).encode()
    assert len(body) == size
    return body, text


def test_a_stale_initialize_body_up_to_the_limit_reaches_the_sdk_unchanged(worker_cluster: StartCluster) -> None:
    cluster = worker_cluster(1)  # the body path does not depend on Redis
    stale = f"stale-{secrets.token_hex(16)}"
    body, request_id = odd_initialize(DEFAULT_MAX_REQUEST_BODY_SIZE - 1)
    with httpx.Client(timeout=30) as http:
        response = http.post(
            cluster.urls[0] + "/mcp", content=chunks(body, 65_537), headers=session_headers(stale)
        )  # chunked: no content-length
        assert response.status_code == 200, response.text[:300]
        assert response.json()["id"] == request_id  # every byte arrived, in order
        fresh = response.headers["mcp-session-id"]
        assert fresh != stale
        call = http.post(
            cluster.urls[0] + "/mcp", json=tool_call("add", {"a": 1, "b": 1}), headers=session_headers(fresh)
        )
        assert '"text":"2"' in call.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_stale_body_over_the_limit_gets_the_sdks_413(worker_cluster: StartCluster, chunked: bool) -> None:
    cluster = worker_cluster(1)
    body, _ = odd_initialize(DEFAULT_MAX_REQUEST_BODY_SIZE + 1)
    with httpx.Client(timeout=30) as http:
        for session_id in (f"stale-{secrets.token_hex(8)}", None):  # the rare path and the plain one alike
            content = chunks(body, 65_537) if chunked else body
            response = http.post(cluster.urls[0] + "/mcp", content=content, headers=session_headers(session_id))
            assert (response.status_code, response.text) == (413, "Request body too large")
        assert http.get(cluster.urls[0] + "/healthz").status_code == 200
