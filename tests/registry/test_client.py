"""The client each kind of registry URL gets, and how a wrong kind is told apart from an outage."""

from __future__ import annotations

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, ConnectionError, MovedError, RedisClusterException

from mcp_registry.config import RegistryConfig
from mcp_registry.registry.client import (
    RedisMisconfigured,
    connect,
    first_contact,
    misconfiguration,
)


async def test_one_redis_keeps_short_timeouts_and_no_retries() -> None:
    client = connect(RegistryConfig(url="redis://h:6390/2", redis_timeout=0.7))
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == ("h", 6390, 2, 0.7)
    assert kwargs["retry"].get_retries() == 0
    await client.aclose()


async def test_a_cluster_url_gets_a_cluster_client_with_its_seeds_credentials_and_tls() -> None:
    config = RegistryConfig(url="rediss+cluster://app:pw@a:7000,b:7001", redis_timeout=0.4, tls_ca_file="/ca.pem")
    client = connect(config)
    assert isinstance(client, RedisCluster)
    seeds = sorted((n.host, n.port) for n in client.nodes_manager.startup_nodes.values())
    assert seeds == [("a", 7000), ("b", 7001)]
    kwargs = client.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("app", "pw", 0.4)
    assert kwargs["ssl_ca_certs"] == "/ca.pem"
    assert kwargs["connection_class"].__name__ == "SSLConnection"


async def test_a_sentinel_url_gets_the_master_of_its_service() -> None:
    client = connect(RegistryConfig(url="redis+sentinel://:pw@s1:26380,s2/mymaster/4", redis_timeout=0.3))
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in client.sentinels.sentinels] == [("s1", 26380), ("s2", 26379)]  # type: ignore[attr-defined]  # fmt: skip
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("pw", 4)
    for sentinel in client.sentinels.sentinels:  # type: ignore[attr-defined]
        assert sentinel.connection_pool.connection_kwargs.get("password") is None  # the master's, not theirs
    await client.aclose()


async def test_first_contact_with_a_plain_redis_passes() -> None:
    await first_contact(fakeredis.FakeAsyncRedis(), RegistryConfig(url="redis://h/0"))


async def test_a_redirect_to_a_plain_client_is_a_misconfiguration_naming_the_cluster_scheme() -> None:
    config = RegistryConfig(url="rediss://u:secret@node-1:7000/0")
    plain = fakeredis.FakeAsyncRedis()
    for error in (MovedError("3999 127.0.0.1:6381"), AskError("3999 127.0.0.1:6381")):
        found = misconfiguration(plain, config, error)
        assert isinstance(found, RedisMisconfigured)
        assert "use rediss+cluster://host:port" in str(found)
        assert "secret" not in str(found)
    assert misconfiguration(plain, config, ConnectionError("refused")) is None  # an outage is an outage


async def test_first_contact_of_a_cluster_url_with_a_plain_redis_says_to_use_redis() -> None:
    """(Against a real plain redis-server: tests/integration/test_redis_cluster.py.)"""
    client = connect(RegistryConfig(url="redis+cluster://127.0.0.1:1"))
    assert isinstance(client, RedisCluster)

    async def what_a_plain_redis_answers() -> None:
        raise RedisClusterException("Cluster mode is not enabled on this node")

    client.initialize = what_a_plain_redis_answers  # type: ignore[method-assign,assignment]
    with pytest.raises(RedisMisconfigured, match="cluster mode disabled: use redis://host:port/db"):
        await first_contact(client, RegistryConfig(url="redis+cluster://127.0.0.1:1"))
