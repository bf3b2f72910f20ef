"""The key schema: ids never appear in keys, keys that move together share a hash tag."""

from __future__ import annotations

import re

from redis.crc import key_slot

from mcp_registry.registry import hasher, key_schema

SECRET = "4f9c2d0be1a8473f9a6c3e5d7b2a1f00"


def hash_tag(key: str) -> str:
    match = re.search(r"\{([^}]*)\}", key)
    assert match is not None
    return match.group(1)


def test_the_id_hash_is_keyed_stable_and_hides_the_id() -> None:
    h = hasher.id_hash(b"k" * 32, SECRET)
    assert h == hasher.id_hash(b"k" * 32, SECRET)
    assert h != hasher.id_hash(b"j" * 32, SECRET)
    assert len(h) == 16
    assert SECRET not in h


def test_a_session_and_its_tombstone_share_a_cluster_slot() -> None:
    schema = key_schema.KeySchema("mcpreg")
    h = hasher.id_hash(b"k" * 32, SECRET)
    assert hash_tag(schema.session(h)) == hash_tag(schema.tombstone(h)) == h
    assert schema.session(h).startswith("mcpreg:")


def test_untrusted_client_names_become_bounded_safe_labels() -> None:
    field = key_schema.f_client("evil|client\nname" + "x" * 500, "1.0|2")
    name, version = field.split("|")[1:]
    assert len(name) == key_schema.LABEL_MAX
    assert "\n" not in name
    assert version == "1.0_2"


def test_lifetimes_fall_into_their_buckets() -> None:
    assert key_schema.f_lifetime(0.2) == "life|1"
    assert key_schema.f_lifetime(30) == "life|30"
    assert key_schema.f_lifetime(31) == "life|60"
    assert key_schema.f_lifetime(10**6) == "life|inf"


def test_tombstones_carry_origin_end_time_and_client() -> None:
    value = key_schema.tombstone_value("host:12", 1700000000.25, ("claude code", "2.1|x"))
    assert key_schema.parse_tombstone(value) == ("host:12", 1700000000.25, ("claude_code", "2.1_x"))
    assert key_schema.parse_tombstone("host:12|1700000000.250") == ("host:12", 1700000000.25, None)
    assert key_schema.parse_tombstone("legacy-value") == ("legacy-value", None, None)


def test_live_values_carry_origin_and_client() -> None:
    value = key_schema.live_value("host:12", ("mcp", "2.3.0"))
    assert key_schema.parse_live(value) == ("host:12", ("mcp", "2.3.0"))
    assert key_schema.parse_live("host:12") == ("host:12", None)  # written before client labels


def test_a_session_key_and_its_tombstone_share_a_cluster_slot() -> None:
    """A stale-id lookup reads both in one round trip on one node of a Redis Cluster."""
    schema = key_schema.KeySchema("p")
    for session_id in ("a", "9f1c2e", "x" * 200):
        h = hasher.id_hash(b"k" * 32, session_id)
        assert key_slot(schema.session(h).encode()) == key_slot(schema.tombstone(h).encode())
    assert len({key_slot(schema.session(hasher.id_hash(b"k" * 32, str(i))).encode()) for i in range(50)}) > 40
