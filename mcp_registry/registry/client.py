"""Build the asyncio Redis client the registry uses: short timeouts, no hidden retries."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_registry.config import RegistryConfig


def connect(config: RegistryConfig, *, max_connections: int = 2) -> Redis:
    """A client for `config.url`. Nothing is sent until the first command.

    redis-py retries failed commands with backoff by default, which would stall the writer for
    seconds while Redis is down; the registry handles failures itself, so retries are off and
    every command is bounded by `config.redis_timeout`.
    """
    options: dict[str, Any] = {
        "socket_timeout": config.redis_timeout,
        "socket_connect_timeout": config.redis_timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
        "decode_responses": True,
        "health_check_interval": 0,
    }
    if config.url.startswith("rediss://"):
        if config.tls_ca_file:
            options["ssl_ca_certs"] = config.tls_ca_file
        if config.tls_cert_file:
            options["ssl_certfile"] = config.tls_cert_file
        if config.tls_key_file:
            options["ssl_keyfile"] = config.tls_key_file
    return Redis.from_url(config.url, **options)
