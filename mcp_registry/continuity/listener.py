"""This worker's internal listener: it serves requests that other workers forwarded to it.

uvicorn's server machinery (its protocol classes on a socket we bind) runs inside the app's
lifespan, with no signal handlers and no lifespan of its own. Every request must carry a hop
that verifies (`hop_auth`): anything else gets 401 (no hop), 410 (an authentic hop for the process
that listened here before: its owner is gone) or 403 (a malformed, bad, stale or replayed one) and
is counted; no header, however made, raises. A verified request is handed to the
middleware's `serve_forwarded` as the client sent it to the first worker (`hop_request`: headers
byte for byte, client address, scheme, root path, query).

TCP listeners set `TCP_NODELAY` (their socket is made with `IPPROTO_TCP`, so asyncio sets it on every
accepted connection too): without it Nagle's algorithm held each hop's answer back about 40 ms on the
plain asyncio loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Final

import uvicorn
from starlette.types import Receive, Scope, Send

from mcp_registry.addresses import Address
from mcp_registry.continuity import hop_request
from mcp_registry.continuity.hop_auth import HOP_HEADER, HOP_WORKER_HEADER, HopVerifier
from mcp_registry.decision import parse_session_id, scan_headers
from mcp_registry.env import ENV_FORWARD_LISTEN, ConfigError
from mcp_registry.outcomes import Refusal
from mcp_registry.telemetry import RequestStats

logger = logging.getLogger(__name__)

ServeForwarded = Callable[[Scope, Receive, Send, str, str | None], Awaitable[None]]
"""`serve(scope, receive, send, sender, session_id)` returns the awaitable that serves a verified hop (called,
then awaited, by the listener's one frame); the listener has read the session id already."""
GRACEFUL_SECONDS: Final = 10
"""How long a stopping listener lets forwarded requests and streams finish before it cancels them."""


class HopListener:
    def __init__(self, listen: Address, verifier: HopVerifier, stats: RequestStats, serve: ServeForwarded) -> None:
        self._listen = listen
        self._verifier = verifier
        self._stats = stats
        self._serve = serve
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self.bound: Address | None = None

    async def start(self) -> Address:
        """Bind and start serving; returns the address actually bound (the port, when 0 was asked)."""
        try:
            sock = _bind(self._listen)
        except OSError as exc:
            raise ConfigError(f"{ENV_FORWARD_LISTEN}: cannot listen on {self._listen}: {exc.strerror or exc}") from None
        config = uvicorn.Config(
            self._app, interface="asgi3", lifespan="off", proxy_headers=False, access_log=False, log_config=None,
            server_header=False, date_header=False,
            timeout_graceful_shutdown=GRACEFUL_SECONDS, timeout_keep_alive=75,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._socket = server, sock
        if self._listen.path is not None:
            self.bound = Address(None, path=sock.getsockname())
        else:
            self.bound = self._listen.with_port(sock.getsockname()[1])
        return self.bound

    async def stop(self) -> None:
        """Stop accepting, let in-flight forwarded requests finish (bounded), close."""
        server, sock = self._server, self._socket
        self._server = self._socket = None
        if server is None or sock is None:
            return
        await server.shutdown(sockets=[sock])
        if self._listen.path is not None and self.bound is not None and self.bound.path:
            _unlink(self.bound.path)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        hop = worker = request = None
        for name, value in scope["headers"]:
            if name == HOP_HEADER:
                hop = value
            elif name == HOP_WORKER_HEADER:
                worker = value
            elif name == hop_request.HOP_REQUEST_HEADER:
                request = value
        verdict = self._verifier.verify(hop, worker, request, method=scope["method"], now=time.time())
        carried = hop_request.decode(request) if request is not None and not isinstance(verdict, Refusal) else None
        if isinstance(verdict, Refusal) or carried is None:
            refusal = verdict if isinstance(verdict, Refusal) else Refusal.MALFORMED
            self._stats.hop_refusals[refusal.value] += 1
            status = {Refusal.MISSING: 401, Refusal.NOT_HERE: 410}.get(refusal, 403)
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        raw_id = scan_headers(carried.headers)[0]
        session_id = parse_session_id(raw_id) if raw_id is not None else None
        await self._serve(carried.apply(scope), receive, send, verdict, session_id)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _bind(address: Address) -> socket.socket:
    if address.path is not None:
        path = address.path.replace("{pid}", str(os.getpid()))
        _unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = path
    else:
        assert address.host is not None
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose protocol says TCP.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (address.host, address.port)
    try:
        sock.bind(target)
        if isinstance(target, str):
            os.chmod(target, 0o600)
        sock.setblocking(False)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock
