"""Takeover: how long the first request after an owner's loss takes, and what the handshake costs Redis.

`python -m bench.takeover [--sessions N]`: two one-worker servers of `bench.apps:wrapped` with
`MCP_SESSION_CONTINUITY=adopt` and a real redis-server. N sessions are opened on the owner and
called once; the owner stops (SIGTERM: it hands its sessions over); then each session's next
request goes to the other server, which finds the owner gone (connection refused), claims the
session in Redis, replays its handshake to its own SDK and serves the request — one adoption per
session, timed from the client. Beside it, the same request on a session that server already
holds (the control). `--memory N` also writes N sessions through the registry's writer, with and
without the handshake, each into a fresh redis-server, and compares Redis memory per session.
Prints markdown tables; `bench/README.md` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import anyio
import httpx

from bench.procs import RedisServer, Uvicorn
from bench.scale import CLIENT, _writer
from bench.sidebyside import HASH_KEY, HEADERS, INITIALIZE
from mcp_registry.continuity.handshake import Handshake
from mcp_registry.registry.events import SessionOpened

CALL: Final = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                          "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}).encode()  # fmt: skip


def _server(workdir: Path, redis_url: str, prefix: str) -> Uvicorn:
    env = {
        "MCP_SESSION_CONTINUITY": "adopt", "MCP_SESSION_REGISTRY": "1", "MCP_SESSION_REGISTRY_URL": redis_url,
        "MCP_SESSION_REGISTRY_PREFIX": prefix, "MCP_SESSION_REGISTRY_HASH_KEY": HASH_KEY,
        "MCP_SESSION_FORWARD_LISTEN": "127.0.0.1:0", "MCP_SESSION_FORWARD_PEERS": "127.0.0.1",
    }  # fmt: skip
    return Uvicorn("wrapped", 1, env, workdir)


async def _open(http: httpx.AsyncClient, url: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        opened = await http.post(url, content=INITIALIZE, headers=HEADERS)
        ids.append(opened.headers["mcp-session-id"])
        await http.post(url, content=CALL, headers={**HEADERS, "mcp-session-id": ids[-1]})
    return ids


async def _timed(http: httpx.AsyncClient, url: str, session_id: str) -> float:
    started = time.perf_counter()
    response = await http.post(url, content=CALL, headers={**HEADERS, "mcp-session-id": session_id})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return elapsed


def run(sessions: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="mcp-registry-bench-takeover-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir).start()
        owner, adopter = _server(workdir, redis.url, "t"), _server(workdir, redis.url, "t")
        try:
            owner.start().wait_ready()
            adopter.start().wait_ready()

            async def measure() -> tuple[list[float], list[float]]:
                async with httpx.AsyncClient(timeout=30) as http:
                    ids = await _open(http, owner.url, sessions)
                    own = await _open(http, adopter.url, 1)
                    await asyncio.sleep(1.0)  # the handshakes reach Redis (the writer's background pass)
                    owner.stop()  # SIGTERM: the owner hands its sessions over
                    adoptions = [await _timed(http, adopter.url, sid) for sid in ids]
                    control = [await _timed(http, adopter.url, own[0]) for _ in range(sessions)]
                    return adoptions, control

            adoptions, control = asyncio.run(measure())
        finally:
            owner.stop()
            adopter.stop()
            redis.stop()
    ms = [a * 1000 for a in adoptions]
    base = [c * 1000 for c in control]
    return [
        f"Command: `python -m bench.takeover --sessions {sessions}`",
        "",
        "| request | count | p50 ms | p90 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| first request after its owner stopped (claim + replay + the request) | {len(ms)} "
        f"| {statistics.median(ms):.2f} | {statistics.quantiles(ms, n=10)[-1]:.2f} | {max(ms):.2f} |",
        f"| a request on a session the server already holds (control) | {len(base)} "
        f"| {statistics.median(base):.2f} | {statistics.quantiles(base, n=10)[-1]:.2f} | {max(base):.2f} |",
    ]


HANDSHAKE: Final = Handshake(
    "2025-11-25", {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": True}},
    {"name": "claude-code", "version": "2.1.4"}, "3q2-7wEAAAAAAAAAAAAAAA",
).encode()
"""A handshake as a common client sends it (the capabilities of the official clients), principal included."""
ROUTE: Final = "10.20.30.40:45123#0123456789abcdef"


def memory_per_session(count: int, takeover: tuple[str, str] | None) -> float:
    """Redis `used_memory` per live session once `count` sessions are written by the registry's writer."""
    with tempfile.TemporaryDirectory(prefix="mcp-registry-bench-memory-") as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            baseline = redis.used_memory()
            anyio.run(_write, redis.url, count, takeover)
            return (redis.used_memory() - baseline) / count
        finally:
            redis.stop()


async def _write(url: str, count: int, takeover: tuple[str, str] | None) -> None:
    writer, book, live, telemetry = _writer(url, "bench-memory", queue_size=count + 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for _ in range(count):
            session_id = uuid.uuid4().hex
            live[session_id] = None
            writer.submit(SessionOpened(session_id, book.opened(session_id).created_at, CLIENT, takeover))
        await telemetry.until(lambda: sum(b for op, b, _ in telemetry.round_trips if op == "sessions") >= count)
        tg.cancel_scope.cancel()


def memory_table(count: int) -> list[str]:
    without = memory_per_session(count, None)
    with_handshake = memory_per_session(count, (ROUTE, HANDSHAKE or ""))
    return [
        f"Command: `python -m bench.takeover --memory {count}`",
        "",
        "| live sessions in Redis | bytes per session | × |",
        "|---|---:|---:|",
        f"| {count:,}, `forward` or registry only (origin and client) | {without:.0f} | 1.00 |",
        f"| {count:,}, `adopt` (and the owner's route and handshake, {len(HANDSHAKE or '')} B of JSON) "
        f"| {with_handshake:.0f} | {with_handshake / without:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover")
    parser.add_argument("--sessions", type=int, default=200, help="adoptions to time (default 200)")
    parser.add_argument("--memory", type=int, default=0, help="also measure Redis memory at this many sessions")
    args = parser.parse_args()
    print("\n".join(run(args.sessions)))
    if args.memory:
        print()
        print("\n".join(memory_table(args.memory)))


if __name__ == "__main__":
    main()
