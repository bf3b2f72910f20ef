"""The middleware's own cost per request, measured in process where machine noise cannot hide it.

`python -m bench.hotpath` calls a trivial ASGI app directly, and the same app wrapped by
`SessionRegistryMiddleware` (registry off, and on — its writer queue idle, as between
refreshes), on the paths that matter: a request on one of the worker's own sessions (the hot
path), a sessionless 2026-07-28 request, and a request without an id on a stateless manager.
Variants alternate in short rounds and each takes the best of its rounds, so background load
falls on all alike. The difference is the middleware's CPU time per request, to compare with
what the SDK itself spends per request (≈ 300–500 µs on this machine, bench/README.md).

The trivial app answers without ever suspending, so it cannot show a cost that grows with the
number of times the SDK's handler suspends and resumes: every coroutine frame a middleware adds
is crossed on each resume (the SDK's request suspends ~4 times). The second table therefore drives
whole `tools/call` requests through the real SDK app in process (`MCPServer`, JSON responses, its
lifespan running), bare and wrapped, with a second bare app as the A/A control, the garbage
collector as Python sets it, and counts GC collections per 1,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


# --- whole requests through the real SDK ----------------------------------------------------------
SDK_INIT = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"hotpath","version":"1"}}}'
)
SDK_CALL = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'


def sdk_scope(session_id: str | None, body: bytes) -> Scope:
    headers = [*HEADERS[:3], (b"mcp-protocol-version", b"2025-11-25"), (b"content-length", str(len(body)).encode())]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode()))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }


async def sdk_request(app: App, session_id: str | None, body: bytes) -> list[Message]:
    """One request as uvicorn would run it: the body, then `http.disconnect` only after the answer."""
    answered = asyncio.Event()
    sent: list[Message] = []
    delivered = False

    async def receive_body() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def collect(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    await app(sdk_scope(session_id, body), receive_body, collect)
    return sent


def sdk_app(variant: str) -> App:
    from mcp_registry.config import Continuity
    from mcp_registry.demo.app import demo_server

    server = demo_server("hotpath", name="hotpath")
    app: App = server.streamable_http_app(json_response=True)
    configs = {
        "registry off": RegistryConfig(worker_id="w"),
        "continuity on": RegistryConfig(
            worker_id="w", hash_key=b"Lu93wbFHLKDWL5H8GpmbOptcMYgmb0xG5w-M9jQSv9w", continuity=Continuity.FORWARD,
            forward_listen="127.0.0.1:0",
        ),
    }
    if variant in configs:
        app = SessionRegistryMiddleware(app, session_manager=server.session_manager, config=configs[variant])
    return app


async def measure_sdk(rounds: int, requests: int) -> list[dict[str, Any]]:
    from mcp_registry.testing import lifespan

    variants = {name: sdk_app(name) for name in ("bare SDK", "registry off", "continuity on", "bare SDK again")}
    best = {name: float("inf") for name in variants}
    collections = {name: [0, 0, 0] for name in variants}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for name, app in variants.items():
            await stack.enter_async_context(lifespan(app))
            start = (await sdk_request(app, None, SDK_INIT))[0]
            sessions[name] = dict(start["headers"])[b"mcp-session-id"].decode()
        for name, app in variants.items():  # warm-up
            for _ in range(requests // 10):
                await sdk_request(app, sessions[name], SDK_CALL)
        for round_ in range(rounds):
            order = list(variants)[round_ % 4 :] + list(variants)[: round_ % 4]
            for name in order:
                before = [s["collections"] for s in gc.get_stats()]
                started = time.process_time_ns()
                for _ in range(requests):
                    await sdk_request(variants[name], sessions[name], SDK_CALL)
                best[name] = min(best[name], (time.process_time_ns() - started) / requests)
                for generation, stats in enumerate(gc.get_stats()):
                    collections[name][generation] += stats["collections"] - before[generation]
    total = rounds * requests
    return [
        {"variant": name, "ns": best[name], "bare_ns": best["bare SDK"],
         "gc_per_1000": [round(c * 1000 / total, 2) for c in collections[name]]}
        for name in variants
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--sdk-requests", type=int, default=300, help="whole SDK requests per round and variant")
    args = parser.parse_args(argv)
    sdk_rows = asyncio.run(measure_sdk(args.rounds, args.sdk_requests))
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
    print()
    print("Whole `tools/call` requests through the real SDK app, in process (own session; default GC):")
    print()
    print("| variant | µs/request | ×bare SDK | GC collections per 1,000 requests (gen 0, 1, 2) |")
    print("|---|---:|---:|---|")
    for row in sdk_rows:
        gens = ", ".join(f"{n:g}" for n in row["gc_per_1000"])
        print(f"| {row['variant']} | {row['ns'] / 1000:.1f} | {row['ns'] / row['bare_ns']:.3f} | {gens} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
