"""Two "hosts" (`uvicorn --workers 2` on 127.0.0.2 and 127.0.0.3) behind a real nginx, a real Redis.

The continuity tests' deployment, as a user would run it: the demo app, continuity on (or off),
the registry on a real `redis-server`, and nginx with a file from `deploy/` doing plain round
robin. Requests of one session land on any of the four workers.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
from redis.asyncio import Redis

from mcp_registry.demo.app import ENV_ALLOWED_HOSTS, ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.proxies import Haproxy, Nginx
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_FORWARD_LISTEN,
    ENV_HASH_KEY,
    ENV_PREFIX,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_ROUTE_LABEL,
    ENV_URL,
)
from mcp_registry.registry.reader import read_audit

ROOT: Final = Path(__file__).resolve().parents[2]
ROUND_ROBIN: Final = ROOT / "deploy" / "nginx.conf"
ROUTE_BY_SESSION: Final = ROOT / "deploy" / "nginx-route-by-session.conf"
HAPROXY_ROUTE_BY_SESSION: Final = ROOT / "deploy" / "haproxy-route-by-session.cfg"
KEY: Final = "CqC18MH0jw6vB2c2AStD9x7ZEKvTltbl4nVuh9lkfgA"
PREFIX: Final = "mcpreg"
HOST_ADDRESSES: Final = ("127.0.0.2", "127.0.0.3")


def host_env(address: str, redis_url: str, *, continuity: str = "forward", label: str | None = None,
             json_response: bool = False) -> dict[str, str]:
    env = {
        ENV_CONTINUITY: continuity,
        ENV_HASH_KEY: KEY,
        ENV_FORWARD_LISTEN: f"{address}:0",
        ENV_REGISTRY: "1",
        ENV_URL: redis_url,
        ENV_PREFIX: PREFIX,
        ENV_REFRESH_SECONDS: "1",
        ENV_JSON_RESPONSE: "1" if json_response else "0",
        # Requests come through nginx (Host 127.0.0.1:<port>) and straight to a host (its own address).
        ENV_ALLOWED_HOSTS: ",".join(f"{a}:*" for a in ("127.0.0.1", *HOST_ADDRESSES)),
    }
    if label is not None:
        env[ENV_ROUTE_LABEL] = label
    return env


@dataclass
class Deployment:
    hosts: list[UvicornHost]
    balancer: Nginx  # or its subclass Haproxy
    redis_url: str

    @property
    def url(self) -> str:
        """The MCP endpoint, through the balancer."""
        return f"{self.balancer.url}/mcp"

    def logs(self) -> str:
        return "\n".join(host.log() for host in self.hosts)

    async def audit(self) -> dict[str, Any]:
        """The registry's audit document for the last 10 minutes (what `mcp-registry audit --json` prints)."""
        redis = Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            report = await read_audit(redis, prefix=PREFIX, since_seconds=600, now=time.time(), session_ttl=3)
        finally:
            await redis.aclose()
        return report.to_json()

    async def audit_until(self, ready: Callable[[dict[str, Any]], bool], *, bound: float = 15.0) -> dict[str, Any]:
        """Read the audit until `ready` holds (the workers flush counters every second), at most `bound` s."""
        deadline = time.monotonic() + bound
        while True:
            doc = await self.audit()
            if ready(doc) or time.monotonic() > deadline:
                return doc
            await anyio.sleep(0.2)  # between polls of a bounded loop


@contextlib.contextmanager
def deployment(
    redis_url: str, *, balancer: Path = ROUND_ROBIN, workers: int = 2,
    env: Callable[[int, str], Mapping[str, str]] | None = None,
) -> Iterator[Deployment]:
    """Two hosts and nginx, stopped on exit. `env(i, address)` gives host i's environment."""
    make_env = env or (lambda i, address: host_env(address, redis_url))
    with contextlib.ExitStack() as stack:
        hosts = [
            stack.enter_context(UvicornHost(address, workers=workers, env=make_env(i, address)))
            for i, address in enumerate(HOST_ADDRESSES)
        ]
        kind = Haproxy if balancer.suffix == ".cfg" else Nginx
        lb = stack.enter_context(kind(balancer, [f"{h.address}:{h.port}" for h in hosts]))
        yield Deployment(hosts, lb, redis_url)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
