from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mcp_registry.demo.balancer import Balancer
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.traffic import TrafficPlan, drive_traffic

pytestmark = pytest.mark.integration


async def test_legacy_clients_hop_workers_get_404s_and_start_over_while_the_others_do_their_part(
    worker_cluster: Callable[..., WorkerCluster],
) -> None:
    cluster = worker_cluster(2)
    plan = TrafficPlan(legacy_clients=2, raw_clients=1, modern_clients=1)
    with Balancer(cluster.urls) as balancer:
        started = time.monotonic()
        summary = await drive_traffic(balancer.url, duration=3.0, plan=plan)
        took = time.monotonic() - started
        forwarded = balancer.stats()

    assert took < 3.0 + 5.0  # the deadline holds, with at most one request timeout of slack
    assert set(summary.served_by) == {"worker-0", "worker-1"}
    assert summary.session_not_found > 0
    assert 0 < summary.reinitializations <= summary.session_not_found
    assert summary.sessions_opened > summary.reinitializations
    assert summary.modern_calls > 0
    assert summary.fabricated_sent > 0
    assert summary.malformed_sent > 0
    assert summary.deletes_sent > 0
    assert summary.errors == 0
    assert all(count > 0 for count in forwarded.values())


async def test_a_request_budget_bounds_each_client(worker_cluster: Callable[..., WorkerCluster]) -> None:
    cluster = worker_cluster(1)
    plan = TrafficPlan(legacy_clients=0, raw_clients=1, modern_clients=1, max_requests_per_client=3)
    summary = await drive_traffic(cluster.urls[0], duration=30.0, plan=plan)
    assert summary.elapsed < 10.0
    assert summary.modern_calls == 3
    assert summary.raw_statuses.total() == 3
