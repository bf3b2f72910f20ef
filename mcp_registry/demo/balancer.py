"""A non-sticky HTTP load balancer: every request goes to the next upstream, round-robin.

It is what puts a legacy MCP session's requests on several workers: unlike a per-connection
balancer, two requests on one keep-alive connection usually reach two different workers.
Response bodies stream through (SSE included); a request body is read first (as nginx buffers it
by default, up to `MAX_BODY`); status and headers are preserved except the hop-by-hop ones. A
request that an upstream refused or dropped before answering — its port closed, or a kept-alive
connection it closed as it shut down — is sent to the next upstream, as nginx does with
`proxy_next_upstream error non_idempotent`: a restarting worker costs no request.
`GET /_balancer/stats` answers the number of requests each upstream answered, and how many found none.

Run it in a child process with `Balancer`, or directly::

    python -m mcp_registry.demo.balancer --port 8080 --upstream http://127.0.0.1:8001 ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Self

import anyio
import httpx
from starlette.types import Message, Receive, Scope, Send

from mcp_registry.demo import _process

STATS_PATH: Final = "/_balancer/stats"
MAX_BODY: Final = 16 * 1024 * 1024
"""A larger request body is answered 413 (MCP messages are small)."""
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host"}
)  # fmt: skip


class BalancerApp:
    """The ASGI app of the balancer. `counts` holds the requests each upstream answered."""

    def __init__(self, upstreams: Sequence[str], *, client: httpx.AsyncClient | None = None) -> None:
        if not upstreams:
            raise ValueError("the balancer needs at least one upstream")
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.counts: Counter[str] = Counter(dict.fromkeys(self.upstreams, 0))
        self.unavailable = 0
        self._next = itertools.cycle(range(len(self.upstreams)))
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, read=None),  # SSE streams may stay silent for long
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            )
            client.headers.clear()  # forward the client's headers, not httpx's defaults
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == STATS_PATH:
            await self._send_stats(send)
            return
        await self._forward(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        try:
            body = await _read_body(receive) if has_body else None
        except BodyTooLargeError:
            await _plain(send, 413, b"request body too large\n")
            return
        if has_body and body is None:  # the client left
            return
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        first = next(self._next)
        for offset in range(len(self.upstreams)):  # each upstream once, from this request's turn
            upstream = self.upstreams[(first + offset) % len(self.upstreams)]
            request = self._client.build_request(scope["method"], upstream + target, headers=headers, content=body)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException:
                break
            except httpx.TransportError:  # refused, or dropped before any answer: the next upstream
                continue
            self.counts[upstream] += 1
            try:
                await _relay_until_disconnect(response, receive, send)
            finally:
                await response.aclose()
            return
        self.unavailable += 1
        await _plain(send, 502, b"no upstream answered\n")

    async def _send_stats(self, send: Send) -> None:
        body = json.dumps({"upstreams": dict(self.counts), "unavailable": self.unavailable}).encode()
        await _plain(send, 200, body, content_type=b"application/json")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


class BodyTooLargeError(Exception):
    pass


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (None: the client left first); `BodyTooLargeError` past `MAX_BODY`."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _relay_until_disconnect(response: httpx.Response, receive: Receive, send: Send) -> None:
    """Relay the response; stop early when the client goes away (an SSE stream may never end)."""
    async with anyio.create_task_group() as tg:

        async def cancel_on_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_on_disconnect)
        await _relay(response, send)
        tg.cancel_scope.cancel()


async def _relay(response: httpx.Response, send: Send) -> None:
    headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
    try:
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError:
            pass  # the upstream went away mid-body: end what we have, as a proxy would
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away


async def _plain(send: Send, status: int, body: bytes, *, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Balancer(_process.ManagedChild):
    """The balancer in a child process on a free 127.0.0.1 port, stopped on exit."""

    what = "the balancer"

    def __init__(
        self, upstreams: Sequence[str], *, port: int | None = None, startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.upstreams = list(upstreams)
        self.port = port if port is not None else _process.free_ports(1)[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        log_path = self.workdir / "balancer.log"
        args = [sys.executable, "-m", "mcp_registry.demo.balancer", "--port", str(self.port)]
        for upstream in self.upstreams:
            args += ["--upstream", upstream]
        self._launch(args, env=os.environ, log_path=log_path, ready=lambda: self._answers(log_path))
        return self

    def stats(self) -> dict[str, int]:
        """Requests each upstream has answered so far."""
        response = httpx.get(self.url + STATS_PATH, timeout=5.0)
        response.raise_for_status()
        upstreams: dict[str, int] = response.json()["upstreams"]
        return upstreams

    def _answers(self, log_path: Path) -> bool:
        if not _process.uvicorn_bound(log_path, self.port):
            return False
        try:
            return httpx.get(self.url + STATS_PATH, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A non-sticky, per-request round-robin HTTP balancer.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="base URL; repeat for each worker")
    args = parser.parse_args(argv)
    uvicorn.run(
        BalancerApp(args.upstream), host=args.host, port=args.port, loop="uvloop", http="httptools",
        access_log=False, log_level="info", timeout_graceful_shutdown=2,
    )  # fmt: skip


if __name__ == "__main__":
    main()
