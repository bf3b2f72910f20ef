"""Configuration: one frozen object, read from the environment in exactly one place.

Constructor arguments win over the environment; every invalid value fails at start-up with a
`ConfigError` whose message names the variable and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, TypeVar

from mcp_registry.addresses import parse_advertise, parse_listen, parse_peers
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_FORWARD_ADVERTISE,
    ENV_FORWARD_LISTEN,
    ENV_FORWARD_PEERS,
    ENV_FORWARD_TIMEOUT,
    ENV_HASH_KEY,
    ENV_LOOKUP_RATE,
    ENV_PATH,
    ENV_PREFIX,
    ENV_QUEUE_SIZE,
    ENV_RECORD_RAW_ID,
    ENV_REDIS_TIMEOUT,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_RETENTION_SECONDS,
    ENV_ROUTE_LABEL,
    ENV_STALE_POLICY,
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_TRACE_LOCAL,
    ENV_URL,
    ENV_WORKER_ID,
    ConfigError,
)
from mcp_registry.key_strength import GENERATE_KEY, key_problem
from mcp_registry.outcomes import StalePolicy
from mcp_registry.redis_url import parse, redact

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_ROUTE_LABEL: Final = re.compile(r"[A-Za-z0-9_-]{1,16}")
_Num = TypeVar("_Num", int, float)



class Continuity(StrEnum):
    """What a worker does with a request on a live session that another worker owns."""

    OFF = "off"
    """Nothing new: the decision table applies (the SDK answers 404 under `spec`)."""
    FORWARD = "forward"
    """Stream the request to the owner's internal listener and its answer back."""
    ADOPT = "adopt"
    """`forward`, and a session whose owner is gone is taken over by a worker of the deployment (its
    handshake is stored in the registry, which `adopt` needs)."""

    @property
    def forwards(self) -> bool:
        return self is not Continuity.OFF


DEFAULT_URL: Final = "redis://localhost:6379/0"
DEFAULT_PREFIX: Final = "mcpreg"


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot be a key namespace, or None (the one rule for workers and the audit)."""
    if not prefix or any(c in prefix for c in "{}| ") or not prefix.isprintable():
        return f"{ENV_PREFIX} must be a non-empty key namespace without braces, '|' or spaces; got {prefix!r}"
    return None


def default_forward_listen() -> str:
    return f"unix:{os.path.join(tempfile.gettempdir(), 'mcp-registry-hop-{pid}.sock')}"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """Every setting of mcp_registry. Build it in code, or with `RegistryConfig.from_env()`."""

    enabled: bool = False
    """Record sessions in Redis (`MCP_SESSION_REGISTRY`)."""
    url: str = DEFAULT_URL
    """Where the registry lives (`MCP_SESSION_REGISTRY_URL`): `redis://`, `rediss://` (TLS) or `unix://` for one
    Redis; `redis+cluster://host:port[,host:port…]` (or `rediss+cluster://`) for Redis Cluster;
    `redis+sentinel://host:port[,host:port…]/SERVICE` (or `rediss+sentinel://`) for Sentinel."""
    prefix: str = DEFAULT_PREFIX
    """Namespace of every key the registry writes (`MCP_SESSION_REGISTRY_PREFIX`)."""
    worker_id: str = field(default_factory=default_worker_id)
    """This worker's name (`MCP_SESSION_REGISTRY_WORKER_ID`), `<hostname>:<pid>` by default."""
    stale_policy: StalePolicy = StalePolicy.SPEC
    """`spec` or `strip` (`MCP_SESSION_STALE_POLICY`)."""
    trace_local: bool = False
    """Also make a span for requests on this worker's own sessions (`MCP_SESSION_REGISTRY_TRACE_LOCAL`)."""
    hash_key: bytes | None = None
    """Key of the id hash and of sealed ids, shared by every worker (`MCP_SESSION_REGISTRY_HASH_KEY`): a generated
    key of at least 32 random bytes (see `key_strength`); agreed in Redis if unset."""
    record_raw_id: bool = False
    """Put the raw id on spans as `mcp.session.id` (`MCP_SESSION_REGISTRY_RECORD_RAW_ID`). Ids are secrets."""
    refresh_seconds: float = 60.0
    """How often live sessions, counters and the heartbeat are written (`MCP_SESSION_REGISTRY_REFRESH_SECONDS`).
    A live-session key lives three intervals, so a worker that dies stops counting as live that much later."""
    retention_seconds: int = 86_400
    """How long tombstones and per-minute counters are kept (`MCP_SESSION_REGISTRY_RETENTION_SECONDS`)."""
    queue_size: int = 10_000
    """Events the background queue holds before it drops and counts them (`MCP_SESSION_REGISTRY_QUEUE_SIZE`)."""
    lookup_rate: float = 200.0
    """Stale-id lookups per second a worker sends to Redis at most (`MCP_SESSION_REGISTRY_LOOKUP_RATE`)."""
    redis_timeout: float = 0.5
    """Seconds a Redis command may take before it counts as failed (`MCP_SESSION_REGISTRY_REDIS_TIMEOUT`)."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    continuity: Continuity = Continuity.OFF
    """`off` or `forward` (`MCP_SESSION_CONTINUITY`); `forward` needs `hash_key`."""
    forward_listen: str = field(default_factory=lambda: default_forward_listen())
    """Where this worker accepts forwarded requests (`MCP_SESSION_FORWARD_LISTEN`): `HOST:PORT` (port 0: any
    free port, so each of `--workers N` gets its own) or `unix:PATH` (`{pid}` in PATH becomes the worker's pid).
    Default: a Unix socket per worker in the temporary directory — the workers of one host reach each other,
    nothing on the network does; set a `HOST:PORT` (and `forward_advertise`) for hops between hosts."""
    forward_advertise: str | None = None
    """How other workers reach that listener (`MCP_SESSION_FORWARD_ADVERTISE`): `HOST` or `HOST:PORT`; the
    bound port is used when the port is absent or 0. Default: the listen address."""
    forward_peers: str | None = None
    """Where this worker may forward (`MCP_SESSION_FORWARD_PEERS`): comma-separated CIDRs, host names and
    `unix:DIRECTORY`. An id whose sealed route lies elsewhere is `fabricated` and never dialled. Default: this
    host's socket directory and the advertised address's network (`addresses.default_peers`)."""
    forward_timeout: float = 300.0
    """Seconds a forwarded request may wait for the owner's response headers (`MCP_SESSION_FORWARD_TIMEOUT`)."""
    paths: tuple[str, ...] | None = None
    """The MCP endpoint's path(s) when the app also serves other routes (`MCP_SESSION_REGISTRY_PATH`,
    comma-separated): requests elsewhere pass untouched and uncounted. Default: discovered from the app
    (the SDK's Streamable HTTP route), else every path."""
    route_label: str | None = None
    """A short name of this host, written in clear into every session id so that a balancer can route a
    session to its host (`MCP_SESSION_ROUTE_LABEL`): letters, digits, `-`, `_`, at most 16."""

    def __post_init__(self) -> None:
        try:
            parse(self.url)
        except ValueError as exc:
            raise ConfigError(f"{ENV_URL}={redact(self.url)!r} is not a registry URL: {exc}") from None
        if (problem := prefix_problem(self.prefix)) is not None:
            raise ConfigError(problem)
        worker = self.worker_id
        if not worker or not worker.isascii() or not worker.isprintable() or "|" in worker:
            # ASCII: the id travels in every hop's header and in Redis keys, byte for byte.
            raise ConfigError(f"{ENV_WORKER_ID} must be a non-empty printable ASCII name without '|'; got {worker!r}")
        if not isinstance(self.stale_policy, StalePolicy):
            object.__setattr__(self, "stale_policy", _parse_policy(str(self.stale_policy)))
        if self.hash_key is not None and (problem := key_problem(self.hash_key)) is not None:
            raise ConfigError(f"{ENV_HASH_KEY} {problem}; generate one with: {GENERATE_KEY}")
        _require_positive(ENV_REFRESH_SECONDS, self.refresh_seconds)
        _require_positive(ENV_RETENTION_SECONDS, self.retention_seconds)
        _require_positive(ENV_QUEUE_SIZE, self.queue_size)
        _require_positive(ENV_LOOKUP_RATE, self.lookup_rate)
        _require_positive(ENV_REDIS_TIMEOUT, self.redis_timeout)
        _require_positive(ENV_FORWARD_TIMEOUT, self.forward_timeout)
        if not isinstance(self.continuity, Continuity):
            object.__setattr__(self, "continuity", _parse_continuity(str(self.continuity)))
        if self.continuity.forwards and self.hash_key is None:
            raise ConfigError(
                f"{ENV_CONTINUITY}={self.continuity} needs {ENV_HASH_KEY}: the key every worker of the deployment "
                f"shares (generate one with: {GENERATE_KEY}), so that any worker can verify the route inside a "
                "session id"
            )
        if self.continuity is Continuity.ADOPT and not self.enabled:
            raise ConfigError(
                f"{ENV_CONTINUITY}=adopt needs {ENV_REGISTRY}=1: a session is taken over from the handshake the "
                "registry stores in Redis"
            )
        if self.paths is not None and (not self.paths or any(not p.startswith("/") or " " in p for p in self.paths)):
            raise ConfigError(
                f"{ENV_PATH} must be one or more comma-separated paths starting with '/'; got {self.paths!r}"
            )
        if self.route_label is not None and not _ROUTE_LABEL.fullmatch(self.route_label):
            raise ConfigError(f"{ENV_ROUTE_LABEL} must be 1-16 letters, digits, '-' or '_'; got {self.route_label!r}")
        if self.continuity.forwards:
            parse_listen(self.forward_listen)
            if self.forward_advertise is not None:
                parse_advertise(self.forward_advertise)
            if self.forward_peers is not None:
                parse_peers(self.forward_peers)

    @property
    def session_ttl_seconds(self) -> int:
        """TTL of a live-session key: three refresh intervals, so one missed refresh loses nothing."""
        return max(1, math.ceil(3 * self.refresh_seconds))

    def replace(self, **changes: object) -> RegistryConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> RegistryConfig:
        """Read the `MCP_SESSION_*` variables; keyword arguments win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if (raw := env.get(ENV_REGISTRY)) is not None:
            values["enabled"] = _parse_bool(ENV_REGISTRY, raw)
        if (raw := env.get(ENV_TRACE_LOCAL)) is not None:
            values["trace_local"] = _parse_bool(ENV_TRACE_LOCAL, raw)
        if (raw := env.get(ENV_RECORD_RAW_ID)) is not None:
            values["record_raw_id"] = _parse_bool(ENV_RECORD_RAW_ID, raw)
        for name, attr in ((ENV_URL, "url"), (ENV_PREFIX, "prefix"), (ENV_WORKER_ID, "worker_id")):
            if (raw := env.get(name)) is not None:
                values[attr] = raw.strip()
        for name, attr in ((ENV_TLS_CA, "tls_ca_file"), (ENV_TLS_CERT, "tls_cert_file"), (ENV_TLS_KEY, "tls_key_file")):
            if raw := env.get(name, "").strip():
                values[attr] = raw
        if (raw := env.get(ENV_STALE_POLICY)) is not None:
            values["stale_policy"] = _parse_policy(raw)
        if (raw := env.get(ENV_HASH_KEY)) is not None:
            if (problem := key_problem(raw.encode(), as_text=True)) is not None:
                raise ConfigError(f"{ENV_HASH_KEY} {problem}; generate one with: {GENERATE_KEY}")
            values["hash_key"] = raw.encode()
        if (raw := env.get(ENV_REFRESH_SECONDS)) is not None:
            values["refresh_seconds"] = _parse_number(ENV_REFRESH_SECONDS, raw, float)
        if (raw := env.get(ENV_RETENTION_SECONDS)) is not None:
            values["retention_seconds"] = _parse_number(ENV_RETENTION_SECONDS, raw, int)
        if (raw := env.get(ENV_QUEUE_SIZE)) is not None:
            values["queue_size"] = _parse_number(ENV_QUEUE_SIZE, raw, int)
        if (raw := env.get(ENV_LOOKUP_RATE)) is not None:
            values["lookup_rate"] = _parse_number(ENV_LOOKUP_RATE, raw, float)
        if (raw := env.get(ENV_REDIS_TIMEOUT)) is not None:
            values["redis_timeout"] = _parse_number(ENV_REDIS_TIMEOUT, raw, float)
        if (raw := env.get(ENV_CONTINUITY)) is not None:
            values["continuity"] = _parse_continuity(raw)
        if raw := env.get(ENV_FORWARD_LISTEN, "").strip():
            values["forward_listen"] = raw
        if raw := env.get(ENV_FORWARD_PEERS, "").strip():
            values["forward_peers"] = raw
        if raw := env.get(ENV_FORWARD_ADVERTISE, "").strip():
            values["forward_advertise"] = raw
        if (raw := env.get(ENV_FORWARD_TIMEOUT)) is not None:
            values["forward_timeout"] = _parse_number(ENV_FORWARD_TIMEOUT, raw, float)
        if raw := env.get(ENV_ROUTE_LABEL, "").strip():
            values["route_label"] = raw
        if raw := env.get(ENV_PATH, "").strip():
            values["paths"] = tuple(p.strip() for p in raw.split(","))
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/true/yes/on or 0/false/no/off; got {raw!r}")


def _parse_policy(raw: str) -> StalePolicy:
    try:
        return StalePolicy(raw.strip().lower())
    except ValueError:
        raise ConfigError(f"{ENV_STALE_POLICY} must be 'spec' or 'strip'; got {raw!r}") from None


def _parse_continuity(raw: str) -> Continuity:
    try:
        return Continuity(raw.strip().lower() or "off")
    except ValueError:
        raise ConfigError(f"{ENV_CONTINUITY} must be 'off', 'forward' or 'adopt'; got {raw!r}") from None


def _parse_number(name: str, raw: str, kind: type[_Num]) -> _Num:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a positive {kind.__name__}; got {raw!r}") from None


def _require_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive, finite number; got {value!r}")
