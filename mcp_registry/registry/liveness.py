"""Worker liveness: each worker's heartbeat, and the reaping of workers that stopped heart-beating.

A worker heart-beats at every refresh (`P:w:{worker}`: how many sessions it holds, when it
started; its score in `P:workers`). A worker whose heartbeat is older than a session TTL was
lost (killed, crashed): one live worker removes it and counts its sessions as ended
(`worker_lost`). The removal is a one-key Lua script that removes only a still-stale heartbeat,
so each lost worker is counted once and one that heart-beats again meanwhile is not reaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mcp_registry.registry import key_schema
from mcp_registry.registry.counters import Execute
from mcp_registry.registry.session_writes import Command

REMOVE_IF_STALE: Final = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) < tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
"""Remove worker ARGV[1] from the workers zset if its heartbeat is older than ARGV[2]."""


def heartbeat_commands(
    schema: key_schema.KeySchema, worker: str, *, live: int, now: float, started: float, ttl: int, retention: int,
    final: bool,
) -> list[Command]:
    """This worker's heartbeat (or, `final`, its departure); the last command lists the workers lost."""
    worker_key = schema.worker(worker)
    if final:
        return [("zrem", (schema.workers, worker), {}), ("delete", (worker_key,), {})]
    return [
        ("hset", (worker_key,), {"mapping": {"live": live, "heartbeat": int(now), "started": int(started)}}),
        ("expire", (worker_key, retention), {}),
        ("zadd", (schema.workers, {worker: now}), {}),
        ("zremrangebyscore", (schema.workers, "-inf", now - retention), {}),
        ("zrangebyscore", (schema.workers, "-inf", now - ttl), {}),
    ]


async def reap(
    redis: Any, execute: Execute, schema: key_schema.KeySchema, lost: Sequence[str], stale_before: float
) -> list[tuple[str, int]]:
    """Remove the workers still stale; returns each removed worker with the sessions it held."""
    reaped: list[tuple[str, int]] = []
    for worker in lost:
        worker_key = schema.worker(worker)
        pipe = redis.pipeline(transaction=False)
        pipe.eval(REMOVE_IF_STALE, 1, schema.workers, worker, stale_before)
        pipe.hget(worker_key, "live")
        removed, live = await execute(pipe, "reap")
        if removed:
            reaped.append((worker, int(live) if live else 0))
            await execute(redis.pipeline(transaction=False).delete(worker_key), "reap")
    return reaped
