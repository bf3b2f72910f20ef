"""Build the asyncio Redis client the registry uses, for one Redis, a Cluster or Sentinel.

Every mode gets the same settings: short timeouts, no hidden retries (the writer handles
failures itself), the TLS files and the URL's ACL user. What differs:

- one Redis (`redis://`, `rediss://`, `unix://`): redis-py's URL parsing, as before;
- Redis Cluster (`redis+cluster://`): redis-py's `RedisCluster` from the seed nodes; its
  non-transactional pipelines are split per node and follow MOVED/ASK redirections;
- Sentinel (`redis+sentinel://`): the master the Sentinels name, asked again on every new
  connection, so that a failed-over master is followed without a restart.

`first_contact` tells a wrong topology from an outage: a `redis://` URL that reaches a cluster
node, or a cluster URL that reaches a plain Redis, is a `RedisMisconfigured` whose message names
the fix, not an endless "unavailable".
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AskError, MovedError, RedisClusterException, RedisError, ResponseError

from mcp_registry.config import RegistryConfig
from mcp_registry.env import ENV_URL
from mcp_registry.redis_url import RedisTarget, Topology, parse, redact

RegistryRedis: TypeAlias = Redis | RedisCluster
"""What the registry talks to: a client of one Redis (also Sentinel's master) or of a Cluster."""

REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
"""What a Redis operation may raise when Redis (not our code) is the trouble."""

_NOT_A_CLUSTER = "cluster mode is not enabled"


class RedisMisconfigured(RedisError):
    """The URL's topology does not match the server's; retrying cannot help. The message names the fix."""


class _SentinelMaster(Redis):
    """Sentinel's master client, which also closes its connections to the Sentinels."""

    sentinels: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.sentinels.sentinels:
            await sentinel.aclose()


def connect(config: RegistryConfig, *, max_connections: int = 2) -> RegistryRedis:
    """A client for `config.url`. Nothing is sent until the first command.

    redis-py retries failed commands with backoff by default, which would stall the writer for
    seconds while Redis is down; the registry handles failures itself, so retries are off and
    every command is bounded by `config.redis_timeout`. (A cluster still follows MOVED and ASK
    redirections: they are answers, not failures.)
    """
    target = parse(config.url)
    options: dict[str, Any] = {
        "socket_timeout": config.redis_timeout,
        "socket_connect_timeout": config.redis_timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
        "decode_responses": True,
        "health_check_interval": 0,
    }
    tls = _tls_options(config) if target.tls else {}
    if target.topology is Topology.SINGLE:
        return Redis.from_url(target.url, **options, **tls)
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        tls["ssl"] = True  # (a `rediss://` URL says so itself)
    if target.topology is Topology.CLUSTER:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            **options, **credentials, **tls,
        )  # fmt: skip
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={**sentinel_options, "decode_responses": True, **tls},
        **options, **credentials, **tls, db=target.db,
    )  # fmt: skip
    assert target.service is not None  # parse() requires it
    master: _SentinelMaster = sentinel.master_for(target.service, redis_class=_SentinelMaster)
    master.sentinels = sentinel
    return master


async def first_contact(redis: RegistryRedis, config: RegistryConfig) -> None:
    """Check, once, that the server is the topology the URL names (`RedisMisconfigured` if not).

    Connection trouble propagates as it is: an outage is not a misconfiguration.
    """
    target = parse(config.url)
    if isinstance(redis, RedisCluster):
        try:
            await redis.initialize()
        except RedisClusterException as exc:
            if _NOT_A_CLUSTER in str(exc).lower():
                raise RedisMisconfigured(_not_a_cluster(target)) from None
            raise
        return
    try:
        info = await redis.info("cluster")
    except ResponseError:
        return  # e.g. an ACL user without INFO: the first MOVED reply will tell (`misconfiguration`)
    if str(info.get("cluster_enabled", "0")) == "1":
        raise RedisMisconfigured(_a_cluster_node(target))


def misconfiguration(redis: RegistryRedis, config: RegistryConfig, exc: BaseException) -> RedisMisconfigured | None:
    """The misconfiguration an error reveals, if it reveals one: a plain client redirected by a cluster."""
    if isinstance(exc, RedisMisconfigured):
        return exc
    if isinstance(exc, (MovedError, AskError)) and not isinstance(redis, RedisCluster):
        return RedisMisconfigured(_a_cluster_node(parse(config.url)))
    return None


async def after_failure(redis: RegistryRedis) -> None:
    """Forget what the client learnt about the topology, so that the next command re-discovers it.

    A cluster client keeps its slot map after a node fails; re-reading it from any reachable
    node finds the replica promoted in its place. (Sentinel's pool asks the Sentinels again on
    every new connection by itself.)
    """
    if isinstance(redis, RedisCluster):
        with contextlib.suppress(*REDIS_ERRORS):
            await redis.aclose()


def _tls_options(config: RegistryConfig) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.tls_ca_file:
        options["ssl_ca_certs"] = config.tls_ca_file
    if config.tls_cert_file:
        options["ssl_certfile"] = config.tls_cert_file
    if config.tls_key_file:
        options["ssl_keyfile"] = config.tls_key_file
    return options


def _a_cluster_node(target: RedisTarget) -> str:
    scheme = "rediss+cluster" if target.tls else "redis+cluster"
    return (
        f"{ENV_URL}={redact(target.url)} reaches a Redis Cluster node, and a plain URL talks to that one node "
        f"only: use {scheme}://host:port[,host:port…] (any node of the cluster as a seed)"
    )


def _not_a_cluster(target: RedisTarget) -> str:
    scheme = "rediss" if target.tls else "redis"
    return (
        f"{ENV_URL}={redact(target.url)} names a Redis Cluster, but the server has cluster mode disabled: "
        f"use {scheme}://host:port/db for one Redis"
    )
