"""Registry URLs: one Redis, a Cluster's seed nodes, or Sentinels and their service."""

from __future__ import annotations

import pytest

from mcp_registry.redis_url import RedisTarget, Topology, parse, redact


def test_one_redis_is_left_to_redis_py() -> None:
    for url, tls in (("redis://h:6380/2", False), ("rediss://u:p@h/0", True), ("unix:///run/redis.sock", False)):
        target = parse(url)
        assert (target.topology, target.tls, target.url) == (Topology.SINGLE, tls, url)


def test_a_cluster_url_lists_seed_nodes_with_credentials() -> None:
    assert parse("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002") == RedisTarget(
        Topology.CLUSTER, True, "rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002",
        (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)), "app", "s@cret",
    )  # fmt: skip
    assert parse("redis+cluster://secret@h:1/").password == "secret"  # a password alone, as redis-py reads it


def test_a_sentinel_url_names_its_service_and_database() -> None:
    target = parse("redis+sentinel://:pw@s1:26380,s2/mymaster/3")
    assert target.topology is Topology.SENTINEL
    assert target.nodes == (("s1", 26380), ("s2", 26379))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 3, None, "pw")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:1", "unsupported scheme 'http'"),
        ("h:6379", "unsupported scheme ''"),
        ("redis://h:port/0", "the port is not a number"),
        ("redis://h:1/x", "the database must be a number"),
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+cluster://h:1,:2", "every node needs a host"),
        ("redis+cluster://h:99999", "from 1 to 65535"),
        ("redis+cluster://h:1?ssl_cert_reqs=none", "query parameters"),
        ("redis+sentinel://s:1", "names its service"),
        ("redis+sentinel://s:1/m/0/x", "names its service"),
        ("redis+sentinel://[::1:1/m", "malformed IPv6"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("?", r"\?")):
        parse(url)


def test_redaction_hides_every_password_and_keeps_the_rest() -> None:
    assert redact("redis+cluster://app:hunter2@a:1,b:2") == "redis+cluster://app:***@a:1,b:2"
    assert redact("redis+sentinel://hunter2@s:1/m") == "redis+sentinel://***@s:1/m"
    assert redact("rediss://:hunter2@h:6379/0") == "rediss://:***@h:6379/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    assert "hunter2" not in redact("redis://u:hun@ter2@h/0")
