"""Shared fixtures: a real redis-server, and real worker clusters that are always stopped.

A test that needs a real dependency skips when it is missing, except under `CI=true`, where
the missing dependency fails the test: CI must prove the real thing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_cluster import LocalCluster, LocalSentinel
from mcp_registry.demo.redis_server import RedisServer, redis_server_on_path


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Skip (or, under CI=true, fail) when a real dependency is missing."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is required under CI=true and is missing", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture
def redis_server_on_path_required() -> None:
    """For tests that start a `redis-server` themselves (e.g. through the demo)."""
    require(redis_server_on_path() is not None, "redis-server (on PATH)")


@pytest.fixture
def redis_server(redis_server_on_path_required: None) -> Iterator[RedisServer]:
    """A real `redis-server` on a free 127.0.0.1 port, empty, stopped after the test."""
    with RedisServer(embedded=False) as server:
        yield server


@pytest.fixture
def redis_cluster(redis_server_on_path_required: None) -> Iterator[LocalCluster]:
    """A real Redis Cluster of 3 masters, one loopback address per node, stopped after the test."""
    require(shutil.which("redis-cli") is not None, "redis-cli (Debian: redis-tools)")
    with LocalCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_with_replicas(redis_server_on_path_required: None) -> Iterator[LocalCluster]:
    """3 masters and 3 replicas, with a 1 s node timeout so that a failover takes seconds."""
    require(shutil.which("redis-cli") is not None, "redis-cli (Debian: redis-tools)")
    with LocalCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel(redis_server_on_path_required: None) -> Iterator[LocalSentinel]:
    """A master, a replica and 3 Sentinels (quorum 2, master down after 1 s)."""
    require(shutil.which("redis-sentinel") is not None, "redis-sentinel (Debian: redis-sentinel)")
    with LocalSentinel(replicas=1, sentinels=3) as sentinel:
        yield sentinel


@pytest.fixture
def worker_cluster() -> Iterator[Callable[..., WorkerCluster]]:
    """Start a `WorkerCluster(workers, **kwargs)`; every cluster started is stopped after the test."""
    clusters: list[WorkerCluster] = []

    def start(workers: int = 2, **kwargs: Any) -> WorkerCluster:
        cluster = WorkerCluster(workers, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in reversed(clusters):
        cluster.stop()
