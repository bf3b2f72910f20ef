"""The stale-session handler: a pure ASGI middleware around an SDK Streamable HTTP app.

Per request it reads the headers, asks the pure core (`decision`) what to do, and applies the
answer to the scope. The hot path — a request on one of this worker's own sessions — is a
header scan, a dict lookup and an integer increment: no body read, no span, no Redis.

Bodies are read only on two rare paths, both bounded by the SDK's own body limit:
- a stale id on a stateful POST under the `spec` policy, where the decision depends on
  whether the body is an `initialize` (buffered, then replayed to the SDK byte for byte);
- a request that opens a session, for the client's name and version (teed as the SDK reads
  it, so nothing is replayed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry import _redact
from mcp_registry._sdk import ManagerView
from mcp_registry.config import RegistryConfig
from mcp_registry.decision import (
    SESSION_HEADER,
    Action,
    IdState,
    Request,
    SessionHeader,
    decide,
    initialize_params,
    needs_body,
    parse_session_id,
    read_headers,
    strip_session_header,
)
from mcp_registry.registry.events import ClientInfo
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.telemetry import ATTR_ACTION, ATTR_WORKER_ID, SPAN_RESOLVE, Era, Status, annotate

logger = logging.getLogger(__name__)

_HANDSHAKE_VERSIONS: Final = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
_NO_SESSION: Final = b"malformed-session-id"


class SessionRegistryMiddleware:
    """Wrap an ASGI app built on the SDK's `StreamableHTTPSessionManager`.

    `config=None` reads the `MCP_SESSION_*` environment variables; an invalid value raises
    `ConfigError` here, at start-up. Background work runs inside the ASGI lifespan; an app
    whose server sends no lifespan events can run it with `async with middleware.running():`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        session_manager: StreamableHTTPSessionManager,
        config: RegistryConfig | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.app = app
        self.config = config if config is not None else RegistryConfig.from_env()
        self._view = ManagerView.of(session_manager)
        self.runtime = WorkerRuntime(
            self.config, self._view, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        if not self.config.record_raw_id:
            _redact.install(self.runtime.hasher.hash)

    def running(self) -> AbstractAsyncContextManager[None]:
        """The background work, for servers that send no lifespan events."""
        return self.runtime.running()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- lifespan --------------------------------------------------------------------------------
    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []

        async def receive_with_shutdown() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                # Record the sessions still held before the SDK's manager forgets them.
                self.runtime.shutting_down()
            return message

        async def send_after_drain(message: Message) -> None:
            # The server exits on shutdown.complete: hold it until our queue has drained.
            if message["type"] == "lifespan.shutdown.complete":
                held.append(message)
            else:
                await send(message)

        async with self.runtime.running():
            await self.app(scope, receive_with_shutdown, send_after_drain)
        for message in held:
            await send(message)

    # --- requests ----------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        header, version = read_headers(scope["headers"])
        if version is not None and version not in _HANDSHAKE_VERSIONS:
            # 2026-07-28 and later: the SDK's sessionless path; session ids play no part.
            runtime.stats.requests[Era.MODERN] += 1
            await self.app(scope, receive, send)
            return
        runtime.stats.requests[Era.LEGACY] += 1

        if header.state is IdState.ABSENT:
            await self._without_id(scope, receive, send)
            return
        if header.value is not None and header.value in self._view.live:
            await self._own_session(header.value, scope, receive, send)
            return
        await self._stale(header, version, scope, receive, send)

    async def _own_session(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        runtime.stats.local_requests += 1
        if self.config.trace_local:
            with runtime.telemetry.tracer.start_as_current_span(SPAN_RESOLVE) as span:
                self._annotate_local(span, session_id)
                await self._serve_own(session_id, scope, receive, send)
            return
        current = trace.get_current_span()
        if current.is_recording():
            self._annotate_local(current, session_id)
        await self._serve_own(session_id, scope, receive, send)

    def _annotate_local(self, span: trace.Span, session_id: str) -> None:
        owned = self.runtime.book.get(session_id)
        annotate(
            span,
            status=Status.LOCAL,
            id_hash=owned.id_hash if owned is not None and owned.id_hash else self.runtime.hasher.hash(session_id),
            origin=self.config.worker_id,
            raw_id=session_id if self.config.record_raw_id else None,
        )
        span.set_attribute(ATTR_ACTION, Action.PASS.value)
        span.set_attribute(ATTR_WORKER_ID, self.config.worker_id)

    async def _serve_own(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "DELETE":
            await self.app(scope, receive, send)
            return

        async def send_watching_delete(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                self.runtime.deleted(session_id)
            await send(message)

        await self.app(scope, receive, send_watching_delete)

    async def _stale(
        self, header: SessionHeader, version: bytes | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        session_id = header.value  # None: malformed
        request = Request(
            method=scope["method"],
            header=header,
            owned=False,
            stateless=self._view.stateless,
            policy=self.config.stale_policy,
        )
        is_initialize = False
        if needs_body(request):
            body_messages, is_initialize = await _read_body(receive, self._view.max_body_bytes)
            receive = _replay(body_messages, receive)
        action = decide(request, is_initialize=is_initialize)

        span = self.runtime.telemetry.start_resolve_span(
            method=scope["method"],
            action=action,
            protocol_version=version.decode("latin-1") if version is not None else None,
        )
        self.runtime.stale(session_id, action, span)

        if action is Action.ACK_DELETE:
            await _acknowledge_delete(send)
        elif action is Action.STRIP:
            scope = dict(scope)
            scope["headers"] = strip_session_header(scope["headers"])
            await self._without_id(scope, receive, send)
        else:  # REJECT: the SDK answers 404 "Session not found"
            if session_id is None:
                # Two different values may start with a live id, which the SDK would serve: hand it
                # one value that no session can have (SDK ids are uuid4 hex).
                scope = dict(scope)
                scope["headers"] = [*strip_session_header(scope["headers"]), (SESSION_HEADER, _NO_SESSION)]
            await self.app(scope, receive, send)

    async def _without_id(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with no id: on a stateful manager a POST may open a session; capture it."""
        if self._view.stateless or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        teed = bytearray()
        limit = self._view.max_body_bytes

        async def receive_teeing() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(teed) <= limit:
                teed.extend(message.get("body", b""))
            return message

        async def send_capturing(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                new_id = _response_session_id(message)
                if new_id is not None and new_id in self._view.live and self.runtime.book.get(new_id) is None:
                    params = initialize_params(bytes(teed)) if len(teed) <= limit else None
                    self.runtime.opened(new_id, ClientInfo.from_initialize(params))
            await send(message)

        await self.app(scope, receive_teeing, send_capturing)


def _response_session_id(message: Message) -> str | None:
    for name, value in message.get("headers", ()):
        if name.lower() == SESSION_HEADER:
            return parse_session_id(value)
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bool]:
    """Buffer the request body (at most `limit` bytes) and tell whether it is an `initialize`.

    Returns the messages read, to be replayed unchanged. A body over the limit is not parsed
    (the SDK will answer 413); reading stops there and the rest streams through untouched.
    """
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, False  # the client went away
        size += len(message.get("body", b""))
        if size > limit:
            return messages, False
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages)
    return messages, initialize_params(body) is not None


def _replay(messages: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    pending = list(messages)

    async def replay_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay_receive


async def _acknowledge_delete(send: Send) -> None:
    """Answer a stale DELETE: the session is gone, which is what the client asked for."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})

