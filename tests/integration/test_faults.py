"""Redis faults against a real `redis-server` and real worker processes of the demo app.

Each test opens sessions on two workers, breaks Redis in one way (absent at start-up, killed,
paused with SIGSTOP, restarted empty, full at `maxmemory`) or breaks a worker (SIGKILL,
SIGTERM), and checks what a client and an operator see:

- every MCP request, from the official client and as raw HTTP, gets its normal answer, and none
  takes longer than `STALL_BOUND` (they take milliseconds: the request path never waits on Redis);
- the registry says "unavailable" once per episode in each worker's log, and "back" once;
- it resumes by itself: every session the workers hold is in Redis again, new ones too;
- what it could not do is counted, and the counts reach the audit once Redis is back: the
  lookups it could not make as `unverified`, the events it had to drop as `dropped`.

The helpers here (traffic that checks every answer, the audit CLI, the workers' Prometheus
endpoints) are shared with the other reliability tests in this directory.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
import httpx
import pytest
import redis
from mcp import Client
from mcp_types import TextContent
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import ClusterNode

from mcp_registry.demo import _process
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.demo.telemetry_setup import ENV_PROMETHEUS_PORT
from mcp_registry.env import ENV_PREFIX, ENV_QUEUE_SIZE, ENV_REFRESH_SECONDS, ENV_REGISTRY, ENV_URL
from mcp_registry.redis_url import Topology
from mcp_registry.redis_url import parse as parse_url
from mcp_registry.registry import hasher, key_schema
from mcp_registry.testing import initialize_request, session_headers, tool_call

pytestmark = pytest.mark.integration

StartCluster = Callable[..., WorkerCluster]
T = TypeVar("T")

PREFIX: Final = "reliab"
SCHEMA: Final = key_schema.KeySchema(PREFIX)
REFRESH_SECONDS: Final = 1
SESSION_TTL: Final = 3 * REFRESH_SECONDS
STALL_BOUND: Final = 3.0
"""No request may take longer than this, whatever Redis does (they take milliseconds)."""
REQUEST_TIMEOUT: Final = 15.0
RECOVERY_BOUND: Final = 20.0
"""How long the registry may take to resume after Redis is back (back-off is at most 5 s)."""
UNAVAILABLE: Final = "mcp_registry: Redis is unavailable"
BACK: Final = "mcp_registry: Redis is back after"


# --- the workers ---------------------------------------------------------------------------------
def registry_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The registry on, refreshing every second; logs wide enough that a line is one line."""
    return {
        ENV_REGISTRY: "1",
        ENV_URL: redis_url,
        ENV_PREFIX: PREFIX,
        ENV_REFRESH_SECONDS: str(REFRESH_SECONDS),
        "COLUMNS": "500",  # Rich (the SDK's log handler) wraps at 80 columns otherwise
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        **extra,
    }


@dataclass
class Workers:
    """A started cluster and the Prometheus endpoint of each worker."""

    cluster: WorkerCluster
    metrics_ports: list[int]

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls

    def metric(self, index: int, name: str, **labels: str) -> float:
        """The sum of the samples of `name` that worker `index` exports with `labels`."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_ports[index]}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def metric_total(self, name: str, **labels: str) -> float:
        return sum(self.metric(i, name, **labels) for i in range(len(self.metrics_ports)))

    def log_count(self, index: int, text: str) -> int:
        return self.cluster.log(index).count(text)


def start_workers(start: StartCluster, count: int, env: dict[str, str], **kwargs: Any) -> Workers:
    ports = _process.free_ports(count)
    cluster = start(count, env=env, worker_env=lambda i: {ENV_PROMETHEUS_PORT: str(ports[i])}, **kwargs)
    return Workers(cluster, ports)


LOOKUPS: Final = "mcp_registry_session_lookups_total"
DROPPED: Final = "mcp_registry_queue_dropped_total"
STATUS: Final = "mcp_registry_session_status"
DROP_REASON: Final = "mcp_registry_drop_reason"


# --- traffic whose every answer is checked -------------------------------------------------------
@dataclass
class Traffic:
    """What a series of requests got: every answer checked, every latency measured."""

    answered: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    created: int = 0
    """Sessions opened (raw and by the official client)."""
    stale_sent: int = 0
    """Requests that carried an id the serving worker does not hold."""
    held: dict[str, int] = field(default_factory=dict)
    """Sessions still open: id -> index of the worker that issued it."""

    def assert_all_served(self) -> None:
        assert not self.failures, "\n".join(self.failures[:20])
        assert self.slowest < STALL_BOUND, f"a request took {self.slowest:.2f}s"


async def timed(traffic: Traffic, what: str, request: Awaitable[T]) -> T | None:
    started = time.monotonic()
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            return await request
    except Exception as exc:  # any failure of a request is what this test reports
        traffic.failures.append(f"{what}: {exc!r}")
        return None
    finally:
        traffic.slowest = max(traffic.slowest, time.monotonic() - started)


async def expect(
    traffic: Traffic, what: str, request: Awaitable[httpx.Response], status: int, contains: str = ""
) -> httpx.Response | None:
    response = await timed(traffic, what, request)
    if response is None:
        return None
    if response.status_code != status or contains not in response.text:
        traffic.failures.append(f"{what}: {response.status_code} {response.text[:200]!r}")
        return None
    traffic.answered[what] += 1
    return response


async def official_client(traffic: Traffic, url: str) -> None:
    """A whole session with the official client: connect, list tools, call one, close (DELETE)."""

    async def session() -> list[str]:
        async with Client(url + "/mcp", mode="legacy") as client:
            tools = await client.list_tools()
            assert "add" in [tool.name for tool in tools.tools]
            result = await client.call_tool("add", {"a": 20, "b": 22})
        return [block.text for block in result.content if isinstance(block, TextContent)]

    texts = await timed(traffic, "official client", session())
    if texts is not None:
        traffic.created += 1
        if texts == ["42"]:
            traffic.answered["official client"] += 1
        else:
            traffic.failures.append(f"official client: {texts}")


async def raw_round(traffic: Traffic, http: httpx.AsyncClient, urls: list[str], *, keep_open: bool) -> None:
    """On each worker: open a session, call on it, hop to the next worker with it, send a made-up
    id, then DELETE the session or keep it open."""
    for index, url in enumerate(urls):
        opened = await expect(
            traffic, "initialize",
            http.post(url + "/mcp", json=initialize_request("reliability"), headers=session_headers(None)), 200,
        )  # fmt: skip
        if opened is None:
            continue
        traffic.created += 1
        session_id = opened.headers["mcp-session-id"]
        call = tool_call("add", {"a": 1, "b": 2})
        await expect(traffic, "own call", http.post(url + "/mcp", json=call, headers=session_headers(session_id)),
                     200, '"text":"3"')  # fmt: skip
        if len(urls) > 1:
            other = urls[(index + 1) % len(urls)]
            traffic.stale_sent += 1
            await expect(traffic, "hop", http.post(other + "/mcp", json=call, headers=session_headers(session_id)),
                         404, "Session not found")  # fmt: skip
        traffic.stale_sent += 1
        made_up = f"made-up-{secrets.token_hex(16)}"
        await expect(traffic, "made-up id", http.post(url + "/mcp", json=call, headers=session_headers(made_up)),
                     404, "Session not found")  # fmt: skip
        if keep_open:
            traffic.held[session_id] = index
        else:
            await expect(traffic, "delete", http.delete(url + "/mcp", headers=session_headers(session_id)), 200)


async def exercise(traffic: Traffic, urls: list[str], *, rounds: int = 1, keep_open: int = 1) -> Traffic:
    """`rounds` raw rounds on every worker (the first `keep_open` leave their session open), and one
    official-client session per worker."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
        for number in range(rounds):
            await raw_round(traffic, http, urls, keep_open=number < keep_open)
    for url in urls:
        await official_client(traffic, url)
    return traffic


def drive(urls: list[str], traffic: Traffic | None = None, **options: int) -> Traffic:
    traffic = traffic if traffic is not None else Traffic()
    return anyio.run(lambda: exercise(traffic, urls, **options))


# --- reading the registry ------------------------------------------------------------------------
def audit(redis_url: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`mcp-registry audit --json` with the workers' prefix and refresh interval (so it judges
    liveness as they do)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--json", "--url", redis_url, "--prefix", PREFIX,
         "--since", "15m", *extra],
        env={**base, ENV_REFRESH_SECONDS: str(REFRESH_SECONDS), **(env or {})},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def poll(read: Callable[[], T], ready: Callable[[T], bool], *, bound: float, interval: float = 0.2) -> T:
    """Read until `ready` holds or `bound` seconds pass; return the last reading."""
    deadline = time.monotonic() + bound
    while True:
        value = read()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)  # between two reads of a bounded poll


def steady(read: Callable[[], float], *, interval: float, bound: float = RECOVERY_BOUND) -> float:
    """`read()` once two readings `interval` seconds apart agree (nothing is moving it any more)."""
    deadline = time.monotonic() + bound
    previous = read()
    while True:
        time.sleep(interval)  # between two reads of a bounded poll
        current = read()
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def sync_redis(registry_url: str) -> redis.Redis | redis.RedisCluster:
    """A synchronous client of what a registry URL names: one Redis, a Cluster, or Sentinel's master."""
    target = parse_url(registry_url)
    if target.topology is Topology.CLUSTER:
        seeds = [ClusterNode(h, p) for h, p in target.nodes]  # type: ignore[no-untyped-call]  # (any may be down)
        return redis.RedisCluster(startup_nodes=seeds, username=target.username, password=target.password,
                                  decode_responses=True, socket_timeout=5)  # fmt: skip
    if target.topology is Topology.SENTINEL:
        assert target.service is not None
        sentinel = redis.Sentinel(list(target.nodes), socket_timeout=5)
        master: redis.Redis = sentinel.master_for(
            target.service, username=target.username, password=target.password, decode_responses=True, socket_timeout=5
        )
        return master
    return redis.Redis.from_url(registry_url, decode_responses=True, socket_timeout=5)


def session_owners(redis_url: str, session_ids: list[str], hash_key: str | None = None) -> dict[str, str | None]:
    """For each raw id: the worker its live-session key names in Redis (None: no key).

    The keys are found with the hash key the workers agreed in Redis, or with `hash_key`."""
    with sync_redis(redis_url) as r:
        key = hash_key if hash_key is not None else r.get(SCHEMA.hash_key)
        if key is None:
            return dict.fromkeys(session_ids)
        values = {sid: r.get(SCHEMA.session(hasher.id_hash(key.encode(), sid))) for sid in session_ids}
        return {sid: key_schema.parse_live(v)[0] if v is not None else None for sid, v in values.items()}


def all_recorded(
    redis_url: str, traffic: Traffic, worker_ids: list[str], hash_key: str | None = None
) -> Callable[[], bool]:
    """Whether every session `traffic` holds is in Redis under the worker that issued it."""
    expected = {sid: worker_ids[index] for sid, index in traffic.held.items()}

    def check() -> bool:
        return session_owners(redis_url, list(expected), hash_key) == expected

    return check


def non_local_lookups(document: dict[str, Any]) -> int:
    return sum(n for status, n in document["lookups"].items() if status != "local")


def wait_for_log(workers: Workers, text: str, count: int = 1, *, bound: float = RECOVERY_BOUND) -> None:
    indexes = range(len(workers.urls))
    poll(lambda: [workers.log_count(i, text) for i in indexes], lambda c: min(c) >= count, bound=bound)
    for index in indexes:
        assert workers.log_count(index, text) == count, workers.cluster.log(index)


def assert_one_episode(workers: Workers) -> None:
    """Each worker said "unavailable" once and "back" once: one episode, one pair of lines."""
    wait_for_log(workers, BACK)
    for index in range(len(workers.urls)):
        assert workers.log_count(index, UNAVAILABLE) == 1, workers.cluster.log(index)


def wait_counted(workers: Workers, sent: int) -> float:
    """Wait until the workers' metrics count exactly `sent` stale ids, whatever their classification;
    return how many of them are `unverified`."""

    def counted() -> float:
        return workers.metric_total(LOOKUPS) - workers.metric_total(LOOKUPS, **{STATUS: "local"})

    poll(counted, lambda n: n >= sent, bound=RECOVERY_BOUND)
    assert counted() == sent
    return workers.metric_total(LOOKUPS, **{STATUS: "unverified"})


def assert_hops_recognised(workers: Workers, redis_url: str) -> None:
    """A session opened on worker-0, once recorded, and used on worker-1 is classified `cross_worker`:
    lookups work again and both workers hash with the same key. (A fresh session, so that no cached
    answer of an earlier lookup, and no race with its recording, decides.)"""

    def stale_ids_classified() -> float:
        return workers.metric(1, LOOKUPS) - workers.metric(1, LOOKUPS, **{STATUS: "local"})

    call = tool_call("add", {"a": 1, "b": 2})
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        opened = http.post(workers.urls[0] + "/mcp", json=initialize_request("hop"), headers=session_headers(None))
        session_id = opened.headers["mcp-session-id"]
        owner = poll(lambda: session_owners(redis_url, [session_id]), lambda o: o[session_id] is not None,
                     bound=RECOVERY_BOUND)  # fmt: skip
        assert owner == {session_id: "worker-0"}
        # Earlier lookups still in flight would blur the count: read it once it holds still for
        # longer than a lookup waits (0.25 s).
        seen = steady(stale_ids_classified, interval=0.5)
        cross = workers.metric(1, LOOKUPS, **{STATUS: "cross_worker"})
        hop = http.post(workers.urls[1] + "/mcp", json=call, headers=session_headers(session_id))
        assert hop.status_code == 404
    poll(stale_ids_classified, lambda n: n > seen, bound=RECOVERY_BOUND)
    assert stale_ids_classified() == seen + 1
    assert workers.metric(1, LOOKUPS, **{STATUS: "cross_worker"}) == cross + 1


# --- the faults ----------------------------------------------------------------------------------
def test_redis_absent_at_start_up_then_appearing(
    redis_server_on_path_required: None, worker_cluster: StartCluster
) -> None:
    server = RedisServer(embedded=False)  # its port is chosen; nothing listens there yet
    try:
        workers = start_workers(worker_cluster, 2, registry_env(server.url))
        wait_for_log(workers, UNAVAILABLE)
        during = drive(workers.urls, rounds=2, keep_open=2)
        during.assert_all_served()
        unverified = wait_counted(workers, during.stale_sent)
        assert unverified == during.stale_sent  # nobody could tell what those ids were

        server.start()
        assert_one_episode(workers)
        assert poll(all_recorded(server.url, during, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
        after = drive(workers.urls, keep_open=1)
        after.assert_all_served()
        both = Traffic(held={**during.held, **after.held})
        assert poll(all_recorded(server.url, both, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)

        total_stale = during.stale_sent + after.stale_sent
        document = poll(lambda: audit(server.url), lambda d: non_local_lookups(d) >= total_stale, bound=RECOVERY_BOUND)
        assert document["sessions"]["created"] == during.created + after.created
        assert document["lookups"]["unverified"] == during.stale_sent
        assert non_local_lookups(document) == total_stale
        assert document["workers"] == workers.cluster.worker_ids
        assert_hops_recognised(workers, server.url)
    finally:
        server.stop()


def test_redis_killed_mid_run_and_started_again_empty(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    before = drive(workers.urls, keep_open=1)
    before.assert_all_served()
    poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) == before.stale_sent, bound=RECOVERY_BOUND)

    redis_server.kill()
    wait_for_log(workers, UNAVAILABLE)
    counted_before = workers.metric_total(LOOKUPS, **{STATUS: "unverified"})
    during = drive(workers.urls, rounds=2, keep_open=1)
    during.assert_all_served()
    unverified = wait_counted(workers, before.stale_sent + during.stale_sent) - counted_before
    assert unverified == during.stale_sent

    redis_server.start()  # a crashed Redis without persistence comes back empty
    assert_one_episode(workers)
    held = Traffic(held={**before.held, **during.held})
    assert poll(all_recorded(redis_server.url, held, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    after = drive(workers.urls, keep_open=1)
    after.assert_all_served()

    # What happened while Redis was down reaches the new, empty Redis: nothing counted is lost.
    stale = during.stale_sent + after.stale_sent
    document = poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) >= stale, bound=RECOVERY_BOUND)
    assert document["sessions"]["created"] == during.created + after.created
    assert document["lookups"]["unverified"] == during.stale_sent
    assert non_local_lookups(document) == stale
    assert document["sessions"]["live"] == len(held.held) + len(after.held)
    assert_hops_recognised(workers, redis_server.url)


def test_redis_restarted_empty_between_two_refreshes(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    before = drive(workers.urls, rounds=2, keep_open=2)
    before.assert_all_served()
    recorded = all_recorded(redis_server.url, before, workers.cluster.worker_ids)
    assert poll(recorded, bool, bound=RECOVERY_BOUND)
    poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) == before.stale_sent, bound=RECOVERY_BOUND)
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        hash_key = r.get(SCHEMA.hash_key)

    redis_server.restart()  # SIGTERM and start: same port, empty dataset
    assert poll(recorded, bool, bound=RECOVERY_BOUND), "the live sessions were not written again"
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        assert r.get(SCHEMA.hash_key) == hash_key, "the workers' hash key was not put back"
    after = drive(workers.urls, keep_open=1)
    after.assert_all_served()
    both = Traffic(held={**before.held, **after.held})
    assert poll(all_recorded(redis_server.url, both, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    assert_hops_recognised(workers, redis_server.url)
    for index in range(2):
        assert workers.log_count(index, UNAVAILABLE) <= 1  # one episode at most (a restart can go unnoticed)


async def made_up_burst(url: str, count: int, *, concurrency: int = 8) -> Traffic:
    """`count` requests with distinct made-up ids, `concurrency` at a time; each must get the 404."""
    traffic = Traffic()
    call = tool_call("add", {"a": 1, "b": 2})
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:

        async def one_stream(share: int) -> None:
            for _ in range(share):
                traffic.stale_sent += 1
                headers = session_headers(f"burst-{secrets.token_hex(16)}")
                await expect(traffic, "made-up id", http.post(url + "/mcp", json=call, headers=headers), 404)

        async with anyio.create_task_group() as tg:
            for stream in range(concurrency):
                tg.start_soon(one_stream, count // concurrency + (stream < count % concurrency))
    return traffic


async def made_up_bursts(urls: list[str], count: int) -> list[Traffic]:
    """`made_up_burst` on every worker at the same time."""
    results: list[Traffic] = []

    async def one(url: str) -> None:
        results.append(await made_up_burst(url, count))

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(one, url)
    return results


def test_redis_paused_is_slow_not_down(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    """SIGSTOP: connections stay open and nothing answers. The writer waits at most its timeout per
    attempt; with a queue of 16, what arrives meanwhile overflows and is counted as dropped."""
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url, **{ENV_QUEUE_SIZE: "16"}))
    before = drive(workers.urls, keep_open=1)
    before.assert_all_served()
    poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) == before.stale_sent, bound=RECOVERY_BOUND)

    redis_server.pause()
    try:
        during = drive(workers.urls, rounds=2, keep_open=1)
        wait_for_log(workers, UNAVAILABLE)
        # Bursts of made-up ids on both workers at once, until both dropped some: each attempt of a
        # writer blocks for its timeout (0.5 s), and meanwhile its queue of 16 overflows.
        bursts: list[Traffic] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and min(workers.metric(i, DROPPED) for i in range(2)) == 0:
            bursts += anyio.run(made_up_bursts, workers.urls, 200)
        during.assert_all_served()
        for burst in bursts:
            burst.assert_all_served()
        assert min(workers.metric(i, DROPPED, **{DROP_REASON: "queue_full"}) for i in range(2)) > 0
        stale = before.stale_sent + during.stale_sent + sum(b.stale_sent for b in bursts)
        wait_counted(workers, stale)
    finally:
        redis_server.resume()

    assert_one_episode(workers)
    held = Traffic(held={**before.held, **during.held})
    assert poll(all_recorded(redis_server.url, held, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    after = drive(workers.urls, keep_open=0)
    after.assert_all_served()
    total = stale + after.stale_sent
    dropped = workers.metric_total(DROPPED)
    document = poll(
        lambda: audit(redis_server.url),
        lambda d: non_local_lookups(d) >= total and d["dropped_events"]["total"] >= dropped,
        bound=RECOVERY_BOUND,
    )
    # Every stale request is counted once (a dropped lookup as `unverified`), and every drop is
    # in the audit, by worker and reason, as the workers' metrics counted it.
    assert non_local_lookups(document) == total
    assert document["dropped_events"]["total"] == dropped
    for row in document["dropped_events"]["by_worker"]:
        index = workers.cluster.worker_ids.index(row["worker"])
        assert row["count"] == workers.metric(index, DROPPED, **{DROP_REASON: row["reason"]})
    assert_hops_recognised(workers, redis_server.url)


def fill_until(r: redis.Redis, done: Callable[[], bool], *, most: int = 20_000) -> int:
    """Write 1 KiB junk keys (outside the registry's prefix) until `done()`; at most `most` keys."""
    for written in range(most):
        if written % 50 == 0 and done():
            return written
        try:
            r.set(f"junk:{written}", "x" * 1024)
        except redis.exceptions.OutOfMemoryError:
            return written
    return most


def test_redis_at_maxmemory_refusing_writes(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    """`noeviction` at `maxmemory`: Redis answers reads and refuses every write (OOM)."""
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    before = drive(workers.urls, keep_open=1)
    before.assert_all_served()
    poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) == before.stale_sent, bound=RECOVERY_BOUND)

    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set(f"{PREFIX}:probe", "x")
        wait_for_log(workers, UNAVAILABLE)
        during = drive(workers.urls, rounds=2, keep_open=1)
        during.assert_all_served()
        unverified = wait_counted(workers, before.stale_sent + during.stale_sent)
        assert unverified == during.stale_sent
        r.config_set("maxmemory", 0)

    assert_one_episode(workers)
    held = Traffic(held={**before.held, **during.held})
    assert poll(all_recorded(redis_server.url, held, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    stale = before.stale_sent + during.stale_sent
    document = poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) >= stale, bound=RECOVERY_BOUND)
    # Redis kept its data: everything from before, during and after the refusal is there.
    assert document["sessions"]["created"] == before.created + during.created
    assert non_local_lookups(document) == stale
    assert document["lookups"]["unverified"] == during.stale_sent
    assert document["dropped_events"]["total"] == 0
    assert_hops_recognised(workers, redis_server.url)


def evicting(r: redis.Redis) -> None:
    """`allkeys-lru` with `maxmemory` a little above what Redis holds now."""
    r.config_set("maxmemory-policy", "allkeys-lru")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 256 * 1024)


def test_redis_evicting_at_maxmemory_serves_every_request(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    """`allkeys-lru` at `maxmemory`: writes succeed by evicting other keys; nothing fails."""
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    before = drive(workers.urls, keep_open=1)
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        hash_key = poll(lambda: r.get(SCHEMA.hash_key), lambda k: k is not None, bound=RECOVERY_BOUND)
        evicting(r)
        fill_until(r, lambda: int(r.info("stats")["evicted_keys"]) >= 500)
        assert int(r.info("stats")["evicted_keys"]) >= 500
        during = drive(workers.urls, rounds=3, keep_open=2)
        fill_until(r, lambda: False, most=1000)
    before.assert_all_served()
    during.assert_all_served()
    # Writes never failed, so there was no episode; the refresh puts back the session keys that
    # eviction took (found here with the key the workers hash with: eviction may take P:hashkey
    # too until the next refresh puts it back, see the next test).
    held = Traffic(held={**before.held, **during.held})
    recorded = all_recorded(redis_server.url, held, workers.cluster.worker_ids, hash_key)
    assert poll(recorded, bool, bound=RECOVERY_BOUND)
    for index in range(2):
        assert workers.log_count(index, UNAVAILABLE) == 0, workers.cluster.log(index)


def test_an_evicted_hash_key_is_put_back_so_later_workers_agree(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    """Eviction under `allkeys-*` can take P:hashkey. A worker started afterwards must not agree a
    key of its own: hops between it and the older workers would all read as `fabricated`.
    (Found by this test; fixed by re-asserting the key on every refresh.)"""
    first = start_workers(worker_cluster, 1, registry_env(redis_server.url))
    opened = drive(first.urls, keep_open=1)
    (session_id,) = opened.held
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        key = r.get(SCHEMA.hash_key)
        assert key is not None
        evicting(r)
        fill_until(r, lambda: not r.exists(SCHEMA.hash_key))
        assert not r.exists(SCHEMA.hash_key), "eviction never took the hash key"
        r.config_set("maxmemory", 0)
        # The first worker refreshes every second: a correct writer puts its key back meanwhile.
        back = poll(lambda: r.get(SCHEMA.hash_key), lambda k: k is not None, bound=5 * REFRESH_SECONDS)

    # Two more workers start (their worker-0 shares the first worker's name; worker-1 is the new one).
    later = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    call = tool_call("add", {"a": 1, "b": 2})

    def hop() -> float:
        response = httpx.post(later.urls[1] + "/mcp", json=call, headers=session_headers(session_id), timeout=5)
        assert response.status_code == 404
        return later.metric(1, LOOKUPS, **{STATUS: "cross_worker"})

    poll(hop, lambda n: n > 0, bound=10, interval=0.5)
    assert back == key
    assert later.metric(1, LOOKUPS, **{STATUS: "fabricated"}) == 0
    assert later.metric(1, LOOKUPS, **{STATUS: "cross_worker"}) > 0


# --- a worker dies or stops ----------------------------------------------------------------------
def worker_lost(document: dict[str, Any]) -> int:
    count: int = document["sessions"]["ended_by_reason"]["worker_lost"]
    return count


def test_a_killed_workers_sessions_end_as_worker_lost(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    traffic = drive(workers.urls, rounds=3, keep_open=3)
    traffic.assert_all_served()
    of_worker = {i: [sid for sid, w in traffic.held.items() if w == i] for i in range(2)}
    assert poll(lambda: audit(redis_server.url), lambda d: d["sessions"]["live"] == 6, bound=RECOVERY_BOUND)

    workers.cluster.kill(1)  # SIGKILL: no shutdown, nothing recorded by worker-1 itself
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        # worker-0 reaps it once its heartbeat is older than the session TTL: it takes worker-1 off
        # the list and records its sessions as ended (the audit stops inferring and reads that).
        reaped = poll(lambda: r.zscore(SCHEMA.workers, "worker-1"), lambda s: s is None, bound=RECOVERY_BOUND)
        assert reaped is None
    document = poll(lambda: audit(redis_server.url), lambda d: worker_lost(d) >= 3, bound=RECOVERY_BOUND)
    assert worker_lost(document) == 3  # once: reaped, not also inferred
    assert document["sessions"]["live"] == 3
    gone = poll(lambda: session_owners(redis_server.url, of_worker[1]), lambda o: set(o.values()) == {None},
                bound=SESSION_TTL + RECOVERY_BOUND)  # fmt: skip
    assert set(gone.values()) == {None}, "worker-1's session keys outlived their TTL"
    survivors = drive(workers.urls[:1], keep_open=0)
    survivors.assert_all_served()

    workers.cluster.kill(0)  # now nobody reaps: the audit itself counts the silent worker's sessions
    document = poll(lambda: audit(redis_server.url), lambda d: worker_lost(d) >= 6, bound=RECOVERY_BOUND)
    assert worker_lost(document) == 6
    assert document["sessions"]["live"] == 0
    assert [(w["worker"], w["alive"]) for w in document["sessions"]["per_worker"]] == [
        ("worker-0", False), ("worker-1", False),
    ]  # fmt: skip
    gone = poll(lambda: session_owners(redis_server.url, list(traffic.held)), lambda o: set(o.values()) == {None},
                bound=SESSION_TTL + RECOVERY_BOUND)  # fmt: skip
    assert set(gone.values()) == {None}


def test_graceful_shutdown_drains_the_queue_and_records_the_ends(
    redis_server: RedisServer, worker_cluster: StartCluster
) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    traffic = drive(workers.urls, rounds=3, keep_open=3)
    traffic.assert_all_served()
    held_by_1 = [sid for sid, w in traffic.held.items() if w == 1]
    assert poll(all_recorded(redis_server.url, traffic, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    # Stale ids right before SIGTERM: their lookups are still queued when the shutdown starts.
    burst = anyio.run(made_up_burst, workers.urls[1], 100)
    burst.assert_all_served()

    started = time.monotonic()
    workers.cluster.terminate(1)  # SIGTERM; uvicorn runs the lifespan shutdown
    took = time.monotonic() - started
    assert took < 8.0, f"the shutdown took {took:.1f}s"
    log = workers.cluster.log(1)
    assert "Application shutdown complete." in log
    assert "did not drain" not in log

    stale = traffic.stale_sent + burst.stale_sent
    document = poll(lambda: audit(redis_server.url), lambda d: non_local_lookups(d) >= stale, bound=RECOVERY_BOUND)
    assert non_local_lookups(document) == stale
    assert document["sessions"]["ended_by_reason"]["shutdown"] == 3
    assert document["sessions"]["live"] == 3
    per_worker = {w["worker"]: w for w in document["sessions"]["per_worker"]}
    assert per_worker["worker-1"]["alive"] is False
    assert per_worker["worker-1"]["last_heartbeat"] is None  # it took itself off the list
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        key = r.get(SCHEMA.hash_key)
        assert key is not None
        for sid in held_by_1:
            h = hasher.id_hash(key.encode(), sid)
            assert r.get(SCHEMA.session(h)) is None
            tombstone = r.get(SCHEMA.tombstone(h))
            assert tombstone is not None
            assert tombstone.startswith("worker-1|")
