"""What `MCP_SESSION_REGISTRY_URL` names: one Redis, a Redis Cluster, or a Sentinel-managed master.

Pure: parsing and redaction only; `registry.client` builds the client. The schemes follow the
convention of the `limits` library:

| URL                                                        | topology                           |
|------------------------------------------------------------|------------------------------------|
| `redis://[user:pass@]host:port/db`, `rediss://…`, `unix://` | one Redis (redis-py's own parsing) |
| `redis+cluster://[user:pass@]host:port[,host:port…]`        | Redis Cluster, from seed nodes     |
| `redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[/db]` | the master Sentinel names   |

A `rediss+` scheme is the same over TLS. In a Sentinel URL the credentials are those of the
Redis master (and its replicas); the Sentinels themselves are asked without them. Ports default
to 6379 (26379 for Sentinels).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import unquote, urlsplit

REDIS_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
FORMS: Final = (
    "redis://host:port/db, rediss://…, unix:///path, redis+cluster://host:port[,host:port…] "
    "or redis+sentinel://host:port[,host:port…]/SERVICE"
)


class Topology(StrEnum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


_SCHEMES: Final = {
    "redis": (Topology.SINGLE, False),
    "rediss": (Topology.SINGLE, True),
    "unix": (Topology.SINGLE, False),
    "redis+cluster": (Topology.CLUSTER, False),
    "rediss+cluster": (Topology.CLUSTER, True),
    "redis+sentinel": (Topology.SENTINEL, False),
    "rediss+sentinel": (Topology.SENTINEL, True),
}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed registry URL. For `SINGLE`, `url` is handed to redis-py as it is."""

    topology: Topology
    tls: bool
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    """Cluster seed nodes, or the Sentinels."""
    username: str | None = None
    password: str | None = None
    service: str | None = None
    """The Sentinel service (master group) name."""
    db: int = 0


def parse(url: str) -> RedisTarget:
    """Parse a registry URL; `ValueError` says what is wrong (without repeating a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"unsupported scheme {scheme.lower() if sep else ''!r}: use {FORMS}")
    topology, tls = _SCHEMES[scheme.lower()]
    if topology is Topology.SINGLE:
        return _single(url, tls)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if query:
        raise ValueError("query parameters are not supported in a cluster or Sentinel URL")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # `redis://secret@host` is a password alone, as redis-py reads it
            username, password = None, unquote(user)
    default_port = SENTINEL_PORT if topology is Topology.SENTINEL else REDIS_PORT
    nodes = tuple(_node(item, default_port) for item in hosts.split(","))
    segments = [s for s in path.split("/") if s]
    if topology is Topology.CLUSTER:
        if segments not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only: leave the path empty")
        return RedisTarget(Topology.CLUSTER, tls, url, nodes, username, password)
    if not segments or len(segments) > 2:
        raise ValueError("a Sentinel URL names its service: redis+sentinel://host:port[,host:port…]/SERVICE[/db]")
    service = unquote(segments[0])
    db = _db(segments[1]) if len(segments) == 2 else 0
    return RedisTarget(Topology.SENTINEL, tls, url, nodes, username, password, service, db)


def redact(url: str) -> str:
    """The URL without its password (URLs are shown in messages, logs and headers)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{hosts}{slash}{path}"


def _single(url: str, tls: bool) -> RedisTarget:
    parts = urlsplit(url)
    if not (parts.netloc or parts.path):
        raise ValueError(f"no host or path: use {FORMS}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the port is not a number") from None
    if parts.scheme != "unix" and parts.path.strip("/"):
        _db(parts.path.strip("/"))
    return RedisTarget(Topology.SINGLE, tls, url)


def _node(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, after = item[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"malformed IPv6 node {item!r}")
        port_text = after[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError("every node needs a host: host:port[,host:port…]")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the port of {host!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError("the database must be a number")
    return int(text)
