"""The middleware's own cost per request, measured in process where machine noise cannot hide it.

`python -m bench.hotpath` calls a trivial ASGI app directly, and the same app wrapped by
`SessionRegistryMiddleware` (registry off, and on — its writer queue idle, as between
refreshes), on the paths that matter: a request on one of the worker's own sessions (the hot
path), a sessionless 2026-07-28 request, and a request without an id on a stateless manager.
Variants alternate in short rounds and each takes the best of its rounds, so background load
falls on all alike. The difference is the middleware's CPU time per request, to compare with
what the SDK itself spends per request (≈ 300–500 µs on this machine, bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from mcp_registry.config import RegistryConfig
from mcp_registry.handler import SessionRegistryMiddleware

SESSION = "0123456789abcdef0123456789abcdef"
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"accept", b"application/json, text/event-stream"),
    (b"content-type", b"application/json"),
    (b"content-length", b"80"),
    (b"user-agent", b"python-httpx/0.28.1"),
]


class FakeManager:
    """What the middleware reads from the SDK's session manager, nothing else."""

    def __init__(self, *, stateless: bool) -> None:
        self._server_instances: dict[str, object] = {} if stateless else {SESSION: object()}
        self.stateless = stateless
        self.max_request_body_size = 4 * 1024 * 1024


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> Message:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def send(message: Message) -> None:
    return None


def scope_for(path: str) -> Scope:
    headers = list(HEADERS)
    if path == "own session":
        headers += [(b"mcp-session-id", SESSION.encode()), (b"mcp-protocol-version", b"2025-11-25")]
    elif path == "2026-07-28 (no session)":
        headers += [(b"mcp-protocol-version", b"2026-07-28")]
    return {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}


App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def per_request_ns(app: App, scope: Scope, requests: int) -> float:
    started = time.process_time_ns()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.process_time_ns() - started) / requests


async def measure(rounds: int, requests: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    paths = {"own session": False, "2026-07-28 (no session)": False, "no id, stateless manager": True}
    for path, stateless in paths.items():
        manager: Any = FakeManager(stateless=stateless)
        off = SessionRegistryMiddleware(inner, session_manager=manager, config=RegistryConfig(worker_id="w"))
        on = SessionRegistryMiddleware(
            inner, session_manager=manager, config=RegistryConfig(worker_id="w", enabled=True)
        )
        variants: dict[str, App] = {"bare app": inner, "registry off": off, "registry on": on}
        best = {name: float("inf") for name in variants}
        scope = scope_for(path)
        for app in variants.values():  # warm-up
            await per_request_ns(app, scope, requests // 10)
        for round_ in range(rounds):
            order = list(variants)[round_ % 3 :] + list(variants)[: round_ % 3]
            for name in order:
                best[name] = min(best[name], await per_request_ns(variants[name], scope, requests))
        if on.runtime.writer is not None:
            on.runtime.writer.close()  # never started: it only held the (empty) queue
        for name in ("registry off", "registry on"):
            rows.append({"path": path, "variant": name, "bare_ns": best["bare app"], "ns": best[name]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    gc.collect()
    gc.freeze()
    rows = asyncio.run(measure(args.rounds, args.requests))
    print("| path | variant | bare app µs/req | wrapped µs/req | middleware µs/req | share of 300 µs SDK request |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        extra = (row["ns"] - row["bare_ns"]) / 1000
        print(
            f"| {row['path']} | {row['variant']} | {row['bare_ns'] / 1000:.2f} | {row['ns'] / 1000:.2f} "
            f"| {extra:.2f} | {extra / 300:.1%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
