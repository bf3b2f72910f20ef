"""Takeover's awaited Redis work: the atomic claim on a session whose owner is gone, and its release.

The one Redis round trip a request can wait for, and only on the rare path where a session's owner
is gone (`paths.takeover`). One pipeline, one slot (`{H}`): claim the session (`SET P:c:{H} <worker>
NX PX`), read its live key (its owner's route and stored handshake) and whether it has a tombstone
(it ended: never brought back). Exactly one worker acquires the claim; it expires by itself, so a
worker that dies mid-adoption leaves it to another. Bounded like every registry command
(`registry.ops`); a Redis error or time-out reaches the caller, which answers 503 (retryable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mcp_registry.config import RegistryConfig
from mcp_registry.registry import key_schema
from mcp_registry.registry.client import RegistryRedis, connect
from mcp_registry.registry.ops import RedisOps
from mcp_registry.telemetry import Telemetry

CLAIM_MILLISECONDS: Final = 3_000
"""How long a claim holds when its worker never releases it (it died mid-adoption); an adoption takes
milliseconds (measured in bench/README.md)."""
CONNECTIONS: Final = 8
"""Takeover's own small pool: adoptions never wait behind the background writer."""
RELEASE_IF_MINE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    acquired: bool
    """This worker holds the claim: it adopts the session."""
    owner: str | None
    """The worker the live key names (None: no live key)."""
    route: str | None
    """Where the session's owner listens now (the live key's route; None: not recorded)."""
    handshake: str | None
    """The stored handshake (None: the session cannot be adopted)."""
    ended: bool
    """A tombstone says it ended (DELETE, idle timeout)."""


class TakeoverStore:
    def __init__(self, config: RegistryConfig, telemetry: Telemetry) -> None:
        self._config = config
        self._keys = key_schema.KeySchema(config.prefix)
        self._ops = RedisOps(telemetry, redis_timeout=config.redis_timeout)
        self._redis: RegistryRedis | None = None

    def _client(self) -> RegistryRedis:
        if self._redis is None:
            self._redis = connect(self._config, max_connections=CONNECTIONS)
        return self._redis

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def claim(self, h: str, worker: str) -> Claim:
        """Try to claim session `h` for `worker`; what the registry knows of it either way."""
        pipe = self._client().pipeline(transaction=False)
        pipe.set(self._keys.claim(h), worker, nx=True, px=CLAIM_MILLISECONDS)
        pipe.get(self._keys.session(h))
        pipe.exists(self._keys.tombstone(h))
        acquired, live, tombstones = await self._ops.execute(pipe, "takeover")
        return _claim(bool(acquired), live, bool(tombstones))

    async def publish(
        self, h: str, worker: str, client: key_schema.Client, takeover: tuple[str, str]
    ) -> None:
        """Name this worker (its route) as the session's owner now, and release the claim."""
        pipe = self._client().pipeline(transaction=False)
        value = key_schema.live_value(worker, client, takeover)
        pipe.set(self._keys.session(h), value, ex=self._config.session_ttl_seconds)
        pipe.delete(self._keys.claim(h))
        await self._ops.execute(pipe, "takeover")

    async def release(self, h: str, worker: str) -> None:
        """Give the claim up (the adoption failed): another worker may try at once."""
        pipe = self._client().pipeline(transaction=False)
        pipe.eval(RELEASE_IF_MINE, 1, self._keys.claim(h), worker)
        await self._ops.execute(pipe, "takeover")


def _claim(acquired: bool, live: object, ended: bool) -> Claim:
    if not isinstance(live, str):
        return Claim(acquired, None, None, None, ended)
    owner, _ = key_schema.parse_live(live)
    takeover = key_schema.parse_takeover(live)
    route, handshake = takeover if takeover is not None else (None, None)
    return Claim(acquired, owner, route, handshake, ended)
