"""The registry on a Sentinel-managed Redis: the master killed under traffic, the registry follows.

A real master, a replica and three real Sentinels (`LocalSentinel`, each on its own loopback
address); the workers are real uvicorn processes of the demo app, pointed at the Sentinels with a
`redis+sentinel://` URL. Nobody restarts anything: the workers find the promoted replica through
the Sentinels, and the audit's counts come out exact.
"""

from __future__ import annotations

import pytest

from mcp_registry.demo.redis_cluster import LocalSentinel, client
from tests.integration.test_faults import (
    BACK,
    DROPPED,
    LOOKUPS,
    RECOVERY_BOUND,
    STATUS,
    UNAVAILABLE,
    StartCluster,
    Traffic,
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

pytestmark = pytest.mark.integration


def wait_in_sync(sentinel: LocalSentinel) -> None:
    """The replica has every write of the master (a failover then loses no acknowledged write)."""
    master, replica = sentinel.data[0], sentinel.data[1]

    def offsets() -> tuple[int, int]:
        with client(master) as m, client(replica) as r:
            return int(m.info("replication")["master_repl_offset"]), int(r.info("replication")["slave_repl_offset"])

    poll(offsets, lambda o: o[0] == o[1], bound=10)


def test_the_master_killed_under_traffic_sentinel_promotes_and_the_registry_follows(
    redis_sentinel: LocalSentinel, worker_cluster: StartCluster
) -> None:
    url = redis_sentinel.url
    workers = start_workers(worker_cluster, 2, registry_env(url))
    before = drive(workers.urls, rounds=2, keep_open=2)
    before.assert_all_served()
    assert poll(all_recorded(url, before, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    poll(lambda: audit(url), lambda d: non_local_lookups(d) == before.stale_sent, bound=RECOVERY_BOUND)

    old = redis_sentinel.master()
    wait_in_sync(redis_sentinel)
    old.kill()
    during = drive(workers.urls, rounds=2, keep_open=1)  # while the Sentinels agree and promote
    during.assert_all_served()
    new = redis_sentinel.wait_failover(old)
    assert new is not old
    after = drive(workers.urls, rounds=1, keep_open=1)
    after.assert_all_served()

    wait_for_log(workers, BACK)  # each worker's writer is out of its back-off (and has heart-beaten)
    everything = Traffic(held={**before.held, **during.held, **after.held})
    assert poll(all_recorded(url, everything, workers.cluster.worker_ids), bool, bound=RECOVERY_BOUND)
    stale = before.stale_sent + during.stale_sent + after.stale_sent
    document = poll(lambda: audit(url), lambda d: non_local_lookups(d) >= stale, bound=RECOVERY_BOUND)
    assert non_local_lookups(document) == stale
    assert document["sessions"]["created"] == before.created + during.created + after.created
    assert document["sessions"]["live"] == len(everything.held)
    assert document["lookups"].get("unverified", 0) == workers.metric_total(LOOKUPS, **{STATUS: "unverified"})
    assert workers.metric_total(DROPPED) == 0
    for index in range(2):  # one episode each, over without a restart
        log = workers.cluster.log(index)
        assert log.count(UNAVAILABLE) == 1, log
        assert log.count(BACK) == 1
    assert_hops_recognised(workers, url)
