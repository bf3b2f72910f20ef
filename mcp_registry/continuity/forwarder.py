"""Send a request to the worker that owns its session and stream the answer back (aiohttp client).

One pooled client per worker: keep-alive connections to every peer's internal listener (one
connector for TCP peers, one per Unix socket, freed when that peer is gone). The client's request
travels in the signed hop headers (`hop_request`: its headers byte for byte, its addresses and
scheme); its body streams to the owner as the client sends it (a body that arrived whole goes as
one write); the owner's answer streams back chunk by chunk, so JSON responses, SSE streams, the
standalone GET stream and long tool calls with progress notifications all pass unchanged.

Bounds: connecting to the owner takes at most `CONNECT_SECONDS` (a dead worker refuses at once;
a dead host times out); the owner's response headers must come within the configured forward
timeout; a streamed body has no bound of its own (an SSE stream may be quiet for long) and
ends when the client or the owner goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import aiohttp
import anyio
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from mcp_registry.addresses import Address
from mcp_registry.continuity.hop import DRAINING_HEADER, GONE_HEADER, OWNER_HEADER, HopResult
from mcp_registry.continuity.hop_auth import HOP_HEADER, HOP_WORKER_HEADER
from mcp_registry.outcomes import ForwardFailure

logger = logging.getLogger(__name__)

CONNECT_SECONDS: Final = 1.0
HOP_PATH: Final = "/hop"
"""The path of every hop's own request: the client's path and query travel in the signed hop request."""
URL_CACHE_SIZE: Final = 1024
UNIX_PEERS: Final = 64
"""Pooled clients for Unix-socket peers at most (the oldest is closed first); one whose peer is gone is freed."""
WHOLE_BODY_BYTES: Final = 1 << 20
"""An answer of known length up to this size is read whole and passed on as one piece."""
_HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    HOP_HEADER, HOP_WORKER_HEADER, OWNER_HEADER, GONE_HEADER, DRAINING_HEADER,
})
_SKIP_AUTO: Final = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")

Sign = Callable[[], list[tuple[bytes, bytes]]]
"""The hop's headers, made when the request is sent."""


class Forwarder:
    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._tcp: aiohttp.ClientSession | None = None
        self._unix: dict[str, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._urls: dict[str, URL] = {}

    async def aclose(self) -> None:
        """Close every pooled connection; errors on close are logged and otherwise ignored."""
        sessions = [s for s in (self._tcp, *self._unix.values()) if s is not None]
        self._tcp, self._unix = None, {}
        for session in sessions:
            try:
                await session.close()
            except (OSError, aiohttp.ClientError):
                logger.debug("mcp_registry: closing a forwarding connection failed", exc_info=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _url(self, origin: str) -> URL:
        """The owner listener's URL (one per peer: nothing a client chose is in it)."""
        url = self._urls.get(origin)
        if url is None:
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[origin] = URL(origin + HOP_PATH, encoded=True)
        return url

    def _session_for(self, address: Address) -> tuple[aiohttp.ClientSession, str]:
        if address.path is not None:
            session = self._unix.get(address.path)
            if session is None:
                if len(self._unix) >= UNIX_PEERS:
                    self._drop_unix(next(iter(self._unix)))
                session = self._unix[address.path] = _client(aiohttp.UnixConnector(path=address.path))
            return session, "http://owner"
        if self._tcp is None:
            self._tcp = _client(aiohttp.TCPConnector(limit=0, ttl_dns_cache=60))
        return self._tcp, f"http://{address}"

    def _drop_unix(self, path: str) -> None:
        """Free the pooled client of a Unix-socket peer (closed in the background: nothing waits for it)."""
        session = self._unix.pop(path, None)
        if session is not None:
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def forward(
        self, address: Address, scope: Scope, receive: Receive, send: Send, sign: Sign
    ) -> HopResult:
        """Forward one request to `address`; the answer goes to `send` unless the hop failed before it."""
        session, origin = self._session_for(address)
        first = await receive()
        if first["type"] != "http.request":
            return HopResult(ForwardFailure.BROKEN, replay=[first])  # the client went away before its body
        body: bytes | AsyncIterator[bytes]
        read: list[Message] = [first]
        """What was read of the client's body, for a replay here if nothing reaches the owner."""
        body = first.get("body", b"") if not first.get("more_body", False) else _stream_body(first, receive, read)
        url = self._url(origin)
        # The client's request itself travels in the signed hop headers, made now (its first bytes came).
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in sign()]
        started = time.perf_counter()
        fresh: aiohttp.ClientSession | None = None
        try:
            try:
                # asyncio's own timeout (aiohttp runs on asyncio): cheaper per hop than a cancel scope.
                async with asyncio.timeout(self.timeout):
                    try:
                        response = await _request(session, scope["method"], url, body, headers)
                    except aiohttp.ClientConnectorError:
                        raise  # refused: the owner is gone (below)
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                        if not isinstance(body, bytes):
                            raise
                        # A kept-alive connection the owner closed (or reset) as this hop was sent on it (its
                        # listener stopping, or the connection idling out): once more, on a new connection.
                        fresh = _client(_fresh_connector(address))
                        response = await _request(fresh, scope["method"], url, body, headers)
            except TimeoutError:
                return HopResult(ForwardFailure.TIMEOUT)
            except (aiohttp.ClientConnectorError, aiohttp.ServerTimeoutError):
                # Nothing reached the owner: every body byte read so far can still be served here.
                if address.path is not None:
                    self._drop_unix(address.path)
                return HopResult(ForwardFailure.OWNER_GONE, replay=list(read))
            except (aiohttp.ClientError, OSError):
                return HopResult(ForwardFailure.BROKEN)
            return await self._answer(response, receive, send, read, started)
        finally:
            if fresh is not None:
                await fresh.close()

    async def _answer(
        self, response: aiohttp.ClientResponse, receive: Receive, send: Send, read: list[Message], started: float
    ) -> HopResult:
        """Pass the owner's answer on (or say why it is not one)."""
        result = HopResult(headers_seconds=time.perf_counter() - started)
        async with response:
            raw_headers = response.raw_headers
            for name, value in raw_headers:
                lname = name.lower()
                if lname == OWNER_HEADER:
                    result.owner = value.decode("utf-8", "replace")
                elif lname == GONE_HEADER:
                    result.failure = ForwardFailure.SESSION_GONE
            if response.status == 503 and any(n.lower() == DRAINING_HEADER for n, _ in raw_headers):
                # The owner is shutting down and did not take this request: nothing reached its app.
                return HopResult(ForwardFailure.OWNER_DRAINING, replay=list(read))
            if response.status == 410 and result.owner is None:
                # A new process listens at the owner's address (a restart, a deploy): the owner is gone, and
                # nothing reached an app, so the request can be answered here as for any stale id.
                return HopResult(ForwardFailure.OWNER_GONE, replay=list(read))
            if response.status in (401, 403) and result.owner is None:
                result.failure = ForwardFailure.REFUSED
                return result
            if response.status == 404 and result.owner is not None and result.failure is None:
                # The owner holds the session, so this 404 is not the SDK's: its app has no route there.
                result.failure = ForwardFailure.NOT_ROUTED
            start = {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(n.lower(), v) for n, v in raw_headers if n.lower() not in _HOP_BY_HOP],
            }
            try:
                if response.content_length is not None and response.content_length <= WHOLE_BODY_BYTES:
                    # A JSON answer (or an error): read it whole, pass it on in one piece.
                    body_bytes = await response.read()
                    await send(start)
                    result.response_started = True
                    await send({"type": "http.response.body", "body": body_bytes, "more_body": False})
                    return result
                await send(start)
                result.response_started = True
                if _is_stream(raw_headers):
                    await _relay_until_disconnect(response, receive, send)
                else:
                    await _relay(response, send)
            except (aiohttp.ClientError, OSError):
                result.failure = result.failure or ForwardFailure.BROKEN
                logger.debug("mcp_registry: a forwarded response broke off", exc_info=True)
                if not result.response_started:
                    return result
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return result


async def _request(
    session: aiohttp.ClientSession, method: str, url: URL, body: bytes | AsyncIterator[bytes],
    headers: list[tuple[str, str]],
) -> aiohttp.ClientResponse:
    return await session.request(
        method, url, data=body, headers=headers, skip_auto_headers=_SKIP_AUTO, allow_redirects=False,
        auto_decompress=False,
    )


def _fresh_connector(address: Address) -> aiohttp.BaseConnector:
    """A connector for one hop on a new connection, closed after it."""
    if address.path is not None:
        return aiohttp.UnixConnector(path=address.path, force_close=True)
    return aiohttp.TCPConnector(limit=0, force_close=True)


def _client(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=CONNECT_SECONDS, sock_read=None)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    )


async def _stream_body(first: Message, receive: Receive, read: list[Message]) -> AsyncIterator[bytes]:
    yield first.get("body", b"")
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _is_stream(headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    return any(n.lower() == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers)


async def _relay(response: aiohttp.ClientResponse, send: Send) -> None:
    async for chunk in response.content.iter_any():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _relay_until_disconnect(response: aiohttp.ClientResponse, receive: Receive, send: Send) -> None:
    """Relay a stream until the owner ends it or the client goes away (then the hop is closed too)."""
    async with anyio.create_task_group() as tg:

        async def watch_client() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch_client)
        await _relay(response, send)
        tg.cancel_scope.cancel()
