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

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry import _redact
from mcp_registry._sdk import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    ManagerView,
    UnsupportedSDK,
    endpoint_paths,
    find_holder,
    forget_deleted,
    holder_of,
    issue_ids_with,
    manager_of,
)
from mcp_registry.config import ENV_CONTINUITY, ConfigError, Continuity, RegistryConfig
from mcp_registry.continuity.hop import GONE_HEADER, OWNER_HEADER, ForwardFailure, HopResult
from mcp_registry.continuity.sealed_id import Route, Shape
from mcp_registry.decision import (
    SESSION_HEADER,
    Action,
    IdState,
    Request,
    SessionHeader,
    decide,
    initialize_params,
    interpret,
    needs_body,
    parse_session_id,
    scan_headers,
    strip_session_header,
)
from mcp_registry.registry.events import ClientInfo
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.telemetry import (
    ATTR_ACTION,
    ATTR_END_REASON,
    ATTR_FORWARD_FAILURE,
    ATTR_HOP_SECONDS,
    ATTR_WORKER_ID,
    SPAN_RESOLVE,
    EndReason,
    Status,
    annotate,
    classification,
)

if TYPE_CHECKING:
    from mcp_registry.continuity.node import ContinuityNode

logger = logging.getLogger(__name__)

_HANDSHAKE_VERSIONS: Final = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
_NO_SESSION: Final = b"malformed-session-id"


class SessionRegistryMiddleware:
    """Wrap an ASGI app built on the SDK's `StreamableHTTPSessionManager`.

    `session_manager=None` finds the manager behind the app's Streamable HTTP route: an app built by
    `MCPServer.streamable_http_app()` (mcp 2.x), `FastMCP.streamable_http_app()` (mcp 1.x) or
    FastMCP 3.x/4.x `http_app()` (with or without its auth), also mounted in a larger Starlette app.
    A manager the app creates in its lifespan (FastMCP, on every lifespan cycle) is taken when the
    app's lifespan has started. Pass `session_manager=` when the app hides its routes.

    `config=None` reads the `MCP_SESSION_*` environment variables; an invalid value raises
    `ConfigError` here, at start-up. Background work runs inside the ASGI lifespan; an app
    whose server sends no lifespan events can run it with `async with middleware.running():`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        session_manager: StreamableHTTPSessionManager | None = None,
        config: RegistryConfig | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.app = app
        self.config = config if config is not None else RegistryConfig.from_env()
        holder = holder_of(session_manager) if session_manager is not None else find_holder(app)
        if holder is None:
            raise ConfigError(
                "SessionRegistryMiddleware found no MCP session manager in the app's routes: pass "
                "session_manager= (e.g. session_manager=server.session_manager)"
            )
        self._holder = holder
        self._bound: StreamableHTTPSessionManager | None = None
        self._view = ManagerView.unbound()
        self.runtime = WorkerRuntime(
            self.config, self._view, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        # Read on every request: plain attributes, no lookups through config or runtime.
        self._live = self._view.live
        self._stats = self.runtime.stats
        self._trace_local = self.config.trace_local
        self.paths: frozenset[str] | None = (
            frozenset(self.config.paths) if self.config.paths else endpoint_paths(app, holder)
        )
        """Where the MCP endpoint is (requests elsewhere pass untouched and uncounted); None: every path."""
        self._owner_marks = [(OWNER_HEADER, self.config.worker_id.encode())]
        self._gone_marks = [*self._owner_marks, (GONE_HEADER, b"1")]
        self.continuity: ContinuityNode | None = None
        if self.config.continuity is Continuity.FORWARD:
            try:
                from mcp_registry.continuity.node import ContinuityNode  # aiohttp: only when continuity is on
            except ImportError as exc:
                raise ConfigError(
                    f"{ENV_CONTINUITY}=forward needs the continuity extra ({exc.name} is missing): "
                    "pip install 'mcp-registry[continuity]'"
                ) from None

            self.continuity = ContinuityNode(self.config, self.runtime.stats, self.runtime.telemetry)
        if not self.config.record_raw_id:
            _redact.install(self.runtime.hasher.hash)
        if (problem := self._bind()) is not None and manager_of(holder) is not None:
            raise ConfigError(problem)

    def _bind(self) -> str | None:
        """Take the manager the holder has now (a new one after each lifespan cycle of a FastMCP app).

        Returns why it cannot be used, or None."""
        manager = manager_of(self._holder)
        if manager is None:
            return (
                "SessionRegistryMiddleware: the app's lifespan started but its Streamable HTTP route still has no "
                "session manager; pass session_manager="
            )
        if manager is self._bound:
            return None
        if self.continuity is not None:
            try:
                issue_ids_with(manager, self.continuity.seal)
            except UnsupportedSDK as exc:
                return f"{ENV_CONTINUITY}=forward: {exc}"
        self._bound = manager
        self._view = ManagerView.of(manager)
        self._live = self._view.live
        self.runtime.bind(self._view)
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The background work (and, with continuity, the internal listener), for servers without lifespan events."""
        if (problem := self._bind()) is not None and manager_of(self._holder) is not None:
            raise ConfigError(problem)
        async with self.runtime.running():
            if self.continuity is None:
                yield
            else:
                async with self.continuity.running(self.serve_forwarded):
                    yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self.paths is not None and scope["path"] not in self.paths:
            await self.app(scope, receive, send)  # another route of the app: not MCP, not ours
            return
        # The hot path is inline, so that it adds one coroutine frame to the SDK's request: every time
        # the SDK's handler suspends and resumes (several times a request), each frame above it is crossed.
        raw, version = scan_headers(scope["headers"])
        stats = self._stats
        if version is not None and version not in _HANDSHAKE_VERSIONS:
            # 2026-07-28 and later: the SDK's sessionless path; session ids play no part.
            stats.modern_requests += 1
            await self.app(scope, receive, send)
            return
        stats.legacy_requests += 1
        if raw is not None and not self._trace_local and scope["method"] != "DELETE":
            session_id = raw.decode("latin-1")
            if session_id in self._live:  # one of this worker's own sessions: the SDK issued it, it is valid
                stats.local_requests += 1
                current = trace.get_current_span()
                if current.is_recording():
                    self._annotate_local(current, session_id)
                await self.app(scope, receive, send)
                return
        header = interpret(raw)
        if header.state is IdState.ABSENT:
            await self._without_id(scope, receive, send)
        elif header.value is not None and header.value in self._live:
            await self._own_session(header.value, scope, receive, send)
        else:
            await self._stale(header, version, scope, receive, send)

    # --- lifespan --------------------------------------------------------------------------------
    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []
        continuity = self.continuity
        refused = False

        async def receive_with_shutdown() -> Message:
            if refused:  # we told the server start-up failed: it sends nothing more; let the app wind down
                return {"type": "lifespan.shutdown"}
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                if continuity is not None:
                    # Forwarded requests and streams finish (bounded) before the SDK drops its sessions.
                    await continuity.drain()
                # Record the sessions still held before the SDK's manager forgets them.
                self.runtime.shutting_down()
            return message

        async def send_after_drain(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the app's own shutdown after a start-up we refused: the server is gone
            if message["type"] == "lifespan.startup.complete" and (problem := self._bind()) is not None:
                # The app's lifespan ran but left no usable manager (or one continuity cannot use).
                refused = True
                await send({"type": "lifespan.startup.failed", "message": problem})
                return
            # The server exits on shutdown.complete: hold it until our queue has drained.
            if message["type"] == "lifespan.shutdown.complete":
                held.append(message)
            else:
                await send(message)

        async with contextlib.AsyncExitStack() as stack:
            failed: str | None = None
            try:
                await stack.enter_async_context(self.running())
            except* ConfigError as group:  # e.g. the internal listener's address cannot be bound
                failed = str(group.exceptions[0])
            if failed is not None:
                # Tell the server, in the lifespan's own words: it prints the message and exits.
                if (await receive())["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.failed", "message": failed})
                return
            await self.app(scope, receive_with_shutdown, send_after_drain)
        for message in held:
            await send(message)

    # --- requests that are not on an own session --------------------------------------------------
    async def _own_session(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        self._stats.local_requests += 1
        if self._trace_local:
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

        deleted = False

        async def send_watching_delete(message: Message) -> None:
            nonlocal deleted
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                deleted = True
                self.runtime.deleted(session_id)
            await send(message)

        await self.app(scope, receive, send_watching_delete)
        if deleted and self._bound is not None:
            forget_deleted(self._bound, session_id)  # (what mcp < 1.30 never does itself)

    async def _stale(
        self, header: SessionHeader, version: bytes | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        session_id = header.value  # None: malformed
        known: Status | None = None
        owner: Route | None = None
        if self.continuity is not None and session_id is not None:
            found = self.continuity.owner_of(session_id)
            if isinstance(found, Route):
                if self.continuity.is_mine(found):
                    known = Status.EXPIRED  # this worker issued it and no longer holds it
                else:
                    owner = found
            elif found is Shape.FORGED:
                known = Status.FABRICATED  # shaped like our ids, but the MAC says nobody here made it
        request = Request(
            method=scope["method"],
            header=header,
            owned=False,
            stateless=self._view.stateless,
            policy=self.config.stale_policy,
            owner_elsewhere=owner is not None,
        )
        is_initialize = False
        if needs_body(request):
            body_messages, is_initialize = await _read_body(receive, self._view.max_body_bytes)
            receive = _replay(body_messages, receive)
        action = decide(request, is_initialize=is_initialize)
        protocol_version = version.decode("latin-1") if version is not None else None
        end_reason: EndReason | None = None
        started: int | None = None
        if action is Action.FORWARD:
            assert owner is not None
            assert session_id is not None
            assert self.continuity is not None
            started = time.time_ns()
            hop = await self.continuity.forward(owner, session_id, scope, receive, send)
            if not (hop.failure is ForwardFailure.OWNER_GONE and not hop.response_started):
                await self._hopped(hop, session_id, protocol_version, started, scope, send)
                return
            self._stats.forward_failures[hop.failure.value] += 1
            # The owner is gone and nothing reached it: answer here, as the decision table says for a stale id.
            receive = _replay(hop.replay or [], receive)
            request = replace(request, owner_elsewhere=False)
            is_initialize = False
            if needs_body(request):
                body_messages, is_initialize = await _read_body(receive, self._view.max_body_bytes)
                receive = _replay(body_messages, receive)
            action = decide(request, is_initialize=is_initialize)
            known, end_reason = Status.EXPIRED, EndReason.WORKER_LOST

        span = self.runtime.telemetry.start_resolve_span(
            method=scope["method"], action=action, protocol_version=protocol_version, start_time=started,
            attributes={
                ATTR_END_REASON: end_reason.value, ATTR_FORWARD_FAILURE: ForwardFailure.OWNER_GONE.value
            } if end_reason is not None else None,
        )
        self.runtime.stale(session_id, action, span, known=known)
        await self._apply(action, session_id, scope, receive, send)

    async def _apply(self, action: Action, session_id: str | None, scope: Scope, receive: Receive, send: Send) -> None:
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

    # --- continuity ------------------------------------------------------------------------------
    async def _hopped(
        self, hop: HopResult, session_id: str, protocol_version: str | None, started: int, scope: Scope, send: Send
    ) -> None:
        """Count and trace a hop that reached the owner's listener; answer for one that failed before any answer."""
        stats = self._stats
        if hop.failure is None:
            status = Status.CROSS_WORKER
            stats.reuse[hop.owner or "unknown"] += 1
        else:
            stats.forward_failures[hop.failure.value] += 1
            status = Status.EXPIRED if hop.failure is ForwardFailure.SESSION_GONE else Status.CROSS_WORKER
        stats.lookups[(status, Action.FORWARD)] += 1
        attributes = classification(
            status, id_hash=self.runtime.hasher.hash(session_id), origin=hop.owner,
            raw_id=session_id if self.config.record_raw_id else None,
        )
        if hop.headers_seconds is not None:
            attributes[ATTR_HOP_SECONDS] = hop.headers_seconds
        if hop.failure is not None:
            attributes[ATTR_FORWARD_FAILURE] = hop.failure.value
        self.runtime.telemetry.start_resolve_span(
            method=scope["method"], action=Action.FORWARD, protocol_version=protocol_version, start_time=started,
            attributes=attributes,
        ).end()
        if hop.failure is not None and not hop.response_started:
            timeout = hop.failure is ForwardFailure.TIMEOUT
            await _error(send, 504 if timeout else 502, "The worker that owns this session did not answer in time"
                         if timeout else "The worker that owns this session failed")

    def serve_forwarded(
        self, scope: Scope, receive: Receive, send: Send, sender: str, session_id: str | None
    ) -> Awaitable[None]:
        """Serve a request another worker forwarded here (its hop, for `session_id`, verified by the listener).

        Returns the coroutine to await rather than awaiting it: no coroutine frame of its own on the path.
        """
        self._stats.served_for[sender] += 1
        live = session_id is not None and session_id in self._live
        marks = self._owner_marks if live else self._gone_marks

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *marks]}
            await send(message)

        if live and scope["method"] != "DELETE":
            return self.app(scope, receive, send_marked)
        if live:
            assert session_id is not None
            return self._serve_own(session_id, scope, receive, send_marked)
        if scope["method"] == "DELETE":
            return _acknowledge_delete(send_marked)
        return self.app(scope, receive, send_marked)  # the SDK answers 404 "Session not found"


    async def _without_id(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with no id: on a stateful manager a POST may open a session (captured), anything
        else that is not an `initialize` is `missing` its id (a client or gateway that dropped it)."""
        if self._bound is None:  # a server without lifespan events, whose app made its manager late
            self._bind()
        if self._view.stateless:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            self._stats.lookups[(Status.MISSING, Action.PASS)] += 1
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
            if message["type"] == "http.response.start":
                status = message["status"]
                params = initialize_params(bytes(teed)) if len(teed) <= limit else None
                if status < 400:
                    new_id = _response_session_id(message)
                    if new_id is not None and new_id in self._view.live and self.runtime.book.get(new_id) is None:
                        self.runtime.opened(new_id, ClientInfo.from_initialize(params))
                elif status == 400 and params is None:  # the SDK's "Missing session ID"
                    self._stats.lookups[(Status.MISSING, Action.PASS)] += 1
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


async def _error(send: Send, status: int, message: str) -> None:
    """A JSON-RPC error with no request id, like the SDK's own transport errors."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _acknowledge_delete(send: Send) -> None:
    """Answer a stale DELETE: the session is gone, which is what the client asked for."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})

