"""The registry on a real Redis Cluster: two workers, a failover and a resharding under traffic.

Every node is a real `redis-server` on its own loopback address (`LocalCluster`); the workers
are real uvicorn processes of the demo app. What a user and an operator would check:

- every request is answered as without the registry, none stalls;
- the audit's counts are exact: what was sent is what was recorded, or counted as dropped;
- the keys spread over the masters (the registry is not pinned to one node);
- the workers' logs hold no "unavailable" line when nothing failed, one episode when a master
  died, and none while slots moved;
- a URL of the wrong kind says how to fix it instead of "unavailable" forever.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

import pytest

from mcp_registry.demo.redis_cluster import ClusterTls, LocalCluster, client
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ENV_PREFIX, ENV_URL
from mcp_registry.registry import key_schema
from tests.conftest import require
from tests.integration.test_faults import (
    BACK,
    DROP_REASON,
    DROPPED,
    PREFIX,
    RECOVERY_BOUND,
    SCHEMA,
    UNAVAILABLE,
    StartCluster,
    Traffic,
    Workers,
    all_recorded,
    assert_hops_recognised,
    audit,
    drive,
    non_local_lookups,
    poll,
    registry_env,
    start_workers,
    wait_for_log,
)
from tests.integration.test_tls import make_pki

pytestmark = pytest.mark.integration

MISCONFIGURED: Final = "the registry is off for this worker"


def settled_audit(url: str, stale: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The audit once every stale id sent has been classified (or counted unverified)."""
    document = poll(lambda: audit(url, env=env), lambda d: non_local_lookups(d) >= stale, bound=RECOVERY_BOUND)
    assert non_local_lookups(document) == stale
    return document


def audit_failure(url: str) -> tuple[int, str]:
    """`mcp-registry audit` expected to fail: its exit status and its one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--url", url, "--prefix", PREFIX],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.stderr.count("\n") == 1, done.stderr
    return done.returncode, done.stderr


def assert_quiet(workers: Workers) -> None:
    """No Redis episode and no traceback in any worker's log."""
    for index in range(len(workers.urls)):
        log = workers.cluster.log(index)
        assert UNAVAILABLE not in log, log
        assert "Traceback" not in log, log


def assert_exact(document: dict[str, Any], traffic: Traffic, *, unverified: int = 0) -> None:
    sessions = document["sessions"]
    lookups = document["lookups"]
    assert sessions["created"] == traffic.created
    made_up = traffic.answered["made-up id"]
    hops = traffic.answered["hop"]
    assert made_up + hops == traffic.stale_sent
    assert lookups.get("unverified", 0) == unverified
    # Every made-up id is fabricated; every hop is cross_worker (unless it could not be checked).
    assert lookups.get("fabricated", 0) + lookups.get("cross_worker", 0) + unverified == traffic.stale_sent
    if not unverified:
        assert lookups.get("fabricated", 0) == made_up
        assert lookups.get("cross_worker", 0) == hops


def wait_in_sync(cluster: LocalCluster) -> None:
    """Every replica has every write of its master (so a failover loses no acknowledged write)."""

    def lagging() -> int:
        behind = 0
        for node in cluster.nodes:
            with client(node) as r:
                info = r.info("replication")
            if info.get("role") == "master":
                offset = info.get("master_repl_offset", 0)
                behind += sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                              and v.get("offset") != offset)  # fmt: skip
        return behind

    poll(lagging, lambda n: n == 0, bound=10)


def counter_master(cluster: LocalCluster) -> RedisServer:
    """The master that holds this minute's counters (the key every worker writes most)."""
    key = SCHEMA.minute(key_schema.minute_of(time.time()))
    with cluster.sync_client() as r:
        node = r.get_node_from_key(key)
    return next(n for n in cluster.nodes if n.host == node.host and n.port == node.port)


def test_two_workers_on_a_three_master_cluster(redis_cluster: LocalCluster, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_cluster.url))
    traffic = drive(workers.urls, rounds=6, keep_open=3)
    traffic.assert_all_served()

    assert poll(all_recorded(redis_cluster.url, traffic, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    deleted = traffic.created - len(traffic.held)  # every session not kept open was DELETEd by its client
    document = poll(lambda: settled_audit(redis_cluster.url, traffic.stale_sent),
                    lambda d: d["sessions"]["ended_by_reason"].get("deleted", 0) >= deleted, bound=RECOVERY_BOUND)
    assert_exact(document, traffic)
    sessions = document["sessions"]
    assert sessions["live"] == len(traffic.held)
    assert sessions["ended_by_reason"] == {
        "deleted": deleted, "idle": 0, "shutdown": 0, "worker_lost": 0, "handed_over": 0,
    }
    assert document["workers"] == workers.cluster.worker_ids

    spread = redis_cluster.keys_per_master(f"{PREFIX}:*")
    assert sum(1 for n in spread.values() if n) >= 2, spread  # not everything on one node
    assert_quiet(workers)


def test_a_plain_url_at_a_cluster_node_names_the_fix(redis_cluster: LocalCluster, worker_cluster: StartCluster) -> None:
    plain = f"redis://{redis_cluster.nodes[0].address}/0"
    workers = start_workers(worker_cluster, 2, registry_env(plain))
    traffic = drive(workers.urls, rounds=2, keep_open=1)
    traffic.assert_all_served()  # the registry is off; the requests do not notice

    wait_for_log(workers, MISCONFIGURED)
    for index in range(2):
        log = workers.cluster.log(index)
        assert "reaches a Redis Cluster node" in log, log
        assert "use redis+cluster://host:port" in log
        assert UNAVAILABLE not in log  # not an endless "unavailable"
    poll(lambda: workers.metric_total(DROPPED, **{DROP_REASON: "misconfigured"}), lambda n: n > 0, bound=10)
    assert sum(redis_cluster.keys_per_master(f"{PREFIX}:*").values()) == 0  # nothing half-written

    status, line = audit_failure(plain)
    assert status == 2
    assert "redis+cluster://" in line


def test_a_cluster_url_at_a_plain_redis_names_the_fix(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    workers = start_workers(worker_cluster, 1, registry_env(url))
    drive(workers.urls, rounds=1).assert_all_served()
    wait_for_log(workers, MISCONFIGURED)
    log = workers.cluster.log(0)
    assert "cluster mode disabled" in log, log
    assert "use redis://host:port/db" in log
    assert UNAVAILABLE not in log


def test_a_master_killed_under_traffic_fails_over_and_the_registry_follows(
    redis_cluster_with_replicas: LocalCluster, worker_cluster: StartCluster
) -> None:
    cluster = redis_cluster_with_replicas
    workers = start_workers(worker_cluster, 2, registry_env(cluster.url))
    before = drive(workers.urls, rounds=2, keep_open=2)
    before.assert_all_served()
    assert poll(all_recorded(cluster.url, before, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    settled_audit(cluster.url, before.stale_sent)

    wait_in_sync(cluster)
    victim = counter_master(cluster)
    victim.kill()
    during = drive(workers.urls, rounds=2, keep_open=1)  # while the cluster notices and promotes
    during.assert_all_served()
    promoted = cluster.wait_promoted(victim)
    after = drive(workers.urls, rounds=1, keep_open=1)
    after.assert_all_served()

    wait_for_log(workers, BACK)  # each worker's writer is out of its back-off (and has heart-beaten)
    everything = Traffic(held={**before.held, **during.held, **after.held})
    assert poll(all_recorded(cluster.url, everything, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    stale = before.stale_sent + during.stale_sent + after.stale_sent
    document = settled_audit(cluster.url, stale)
    sessions = document["sessions"]
    lookups = document["lookups"]
    # Nothing counted is lost: the counters that could not be written while the master was down
    # were kept and written to its replica once promoted.
    assert sessions["created"] == before.created + during.created + after.created
    assert sessions["live"] == len(everything.held)
    unverified = lookups.get("unverified", 0)
    assert unverified == workers.metric_total("mcp_registry_session_lookups_total",
                                              mcp_registry_session_status="unverified")  # fmt: skip
    assert workers.metric_total(DROPPED) == 0
    assert promoted.running()
    for index in range(2):  # each worker met the dead master once (its counters live there), and got over it
        log = workers.cluster.log(index)
        assert log.count(UNAVAILABLE) == 1, log
        assert log.count(BACK) == 1
    assert_hops_recognised(workers, cluster.url)


def test_slots_resharded_under_traffic(redis_cluster: LocalCluster, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_cluster.url))
    first = drive(workers.urls, rounds=2, keep_open=2)
    first.assert_all_served()
    settled_audit(redis_cluster.url, first.stale_sent)

    source, target = redis_cluster.masters()[:2]
    moving = Traffic()
    traffic = threading.Thread(target=drive, args=(workers.urls, moving), kwargs={"rounds": 12, "keep_open": 4})
    traffic.start()
    redis_cluster.reshard(source, target, 3000)  # every key in those slots migrates, with ASK/MOVED meanwhile
    traffic.join(timeout=120)
    assert not traffic.is_alive()
    moving.assert_all_served()

    everything = Traffic(held={**first.held, **moving.held})
    assert poll(all_recorded(redis_cluster.url, everything, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    document = settled_audit(redis_cluster.url, first.stale_sent + moving.stale_sent)
    combined = Traffic(created=first.created + moving.created, stale_sent=first.stale_sent + moving.stale_sent)
    combined.answered.update(first.answered)
    combined.answered.update(moving.answered)
    assert_exact(document, combined)
    assert workers.metric_total(DROPPED) == 0
    assert_quiet(workers)  # redirections are answers, not failures


def test_an_acl_user_kept_to_the_prefix_writes_and_audits_on_a_cluster(
    redis_server_on_path_required: None, worker_cluster: StartCluster
) -> None:
    """The URL's ACL user reaches every node (and only the registry's keys); the audit reads with it."""
    require(shutil.which("redis-cli") is not None, "redis-cli (Debian: redis-tools)")
    users = [f"registry on >reg-secret ~{PREFIX}:* +@all"]
    with LocalCluster(masters=3, password="admin-secret", users=users) as cluster:
        url = cluster.url.replace("redis+cluster://", "redis+cluster://registry:reg-secret@")
        workers = start_workers(worker_cluster, 2, registry_env(url))
        traffic = drive(workers.urls, rounds=2, keep_open=1)
        traffic.assert_all_served()
        assert poll(all_recorded(url, traffic, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
        assert_exact(settled_audit(url, traffic.stale_sent), traffic)
        assert_quiet(workers)
        for index in range(2):
            assert "reg-secret" not in workers.cluster.log(index)

        status, line = audit_failure(url.replace("reg-secret", "not-it"))
        assert status == 1
        assert "not-it" not in line


def test_a_tls_cluster_with_client_certificates(
    redis_server_on_path_required: None, worker_cluster: StartCluster, tmp_path: Path
) -> None:
    """`rediss+cluster://` with the TLS file settings: the workers and the audit reach every node over
    TLS (the bus and replication too), presenting a client certificate each node requires."""
    require(shutil.which("redis-cli") is not None, "redis-cli (Debian: redis-tools)")
    require(shutil.which("openssl") is not None, "openssl (on PATH), to make the test's certificates")
    pki = make_pki(tmp_path, ips=tuple(f"127.0.0.{11 + i}" for i in range(3)))
    with LocalCluster(masters=3, tls=ClusterTls(pki.server_cert, pki.server_key, pki.ca)) as cluster:
        assert cluster.url.startswith("rediss+cluster://")
        workers = start_workers(worker_cluster, 2, registry_env(cluster.url, **pki.client_env))
        traffic = drive(workers.urls, rounds=2, keep_open=1)
        traffic.assert_all_served()
        assert_exact(settled_audit(cluster.url, traffic.stale_sent, env=pki.client_env), traffic)
        assert_quiet(workers)
        assert sum(cluster.keys_per_master(f"{PREFIX}:s:*").values()) >= len(traffic.held)

        status, line = audit_failure(cluster.url)  # no client certificate: refused, in one line
        assert status == 1
        assert "cannot read the registry" in line


def test_audit_reads_a_cluster(redis_cluster: LocalCluster) -> None:
    """The audit's pipelined reads span slots on several masters."""
    with redis_cluster.sync_client() as r:
        for minute in range(key_schema.minute_of(time.time()) - 5, key_schema.minute_of(time.time()) + 1):
            r.hincrby(SCHEMA.minute(minute), key_schema.f_created("w-1"), 2)
        r.zadd(SCHEMA.workers, {"w-1": time.time()})
        r.hset(SCHEMA.worker("w-1"), mapping={"live": 3, "heartbeat": int(time.time())})
    document = audit(redis_cluster.url, env={ENV_URL: "", ENV_PREFIX: ""})
    sessions = document["sessions"]
    assert sessions["created"] == 12
    assert sessions["live"] == 3
