"""The stale-session handler: a pure ASGI middleware around an SDK Streamable HTTP app.

Per request it reads the headers and dispatches. The hot path — a request on one of this
worker's own sessions — is inline here: a header scan, a dict lookup and an integer increment
(no body read, no span, no Redis, one coroutine frame). Everything else has a module of its own:

- `paths.own`: the rest of an own session's requests (a DELETE, a span of its own);
- `paths.opening`: no id (a session opening, captured; or `missing`);
- `paths.stale`: a stale or malformed id (decide, apply, forward to the owner);
- `continuity.owner`: a request another worker forwarded here;
- `binding` and `lifespan`: the SDK's manager across lifespan cycles, and our work's start and end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_registry import _redact
from mcp_registry._sdk import HANDSHAKE_PROTOCOL_VERSIONS, ManagerView, endpoint_paths, find_holder, holder_of
from mcp_registry.binding import ManagerBinding
from mcp_registry.config import RegistryConfig
from mcp_registry.decision import IdState, interpret, scan_headers, user_agent_product
from mcp_registry.env import ENV_CONTINUITY, ConfigError
from mcp_registry.lifespan import serve_lifespan
from mcp_registry.outcomes import Era
from mcp_registry.paths.asgi import acknowledge_delete
from mcp_registry.paths.opening import OpeningPath
from mcp_registry.paths.own import OwnSessionPath
from mcp_registry.paths.stale import StalePath
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.stopping import Stopping

if TYPE_CHECKING:
    from mcp_registry.adoption import OnAdopted
    from mcp_registry.continuity.node import ContinuityNode
    from mcp_registry.continuity.owner import OwnerSide
    from mcp_registry.paths.takeover import TakeoverPath

_HANDSHAKE_VERSIONS: Final = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
MODERN: Final = Era.MODERN.value


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

    `on_adopted` (with `MCP_SESSION_CONTINUITY=adopt`) is called once per session this worker takes
    over from a worker that is gone, before that session's request is served: see `Adoption`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        session_manager: StreamableHTTPSessionManager | None = None,
        config: RegistryConfig | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        on_adopted: OnAdopted | None = None,
    ) -> None:
        self.app = app
        self.config = config if config is not None else RegistryConfig.from_env()
        holder = holder_of(session_manager) if session_manager is not None else find_holder(app)
        if holder is None:
            raise ConfigError(
                "SessionRegistryMiddleware found no MCP session manager in the app's routes: pass "
                "session_manager= (e.g. session_manager=server.session_manager)"
            )
        unbound = ManagerView.unbound()
        self.runtime = WorkerRuntime(
            self.config, unbound, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        # Read on every request: plain attributes, no lookups through config or runtime.
        self._live = unbound.live
        self._stats = self.runtime.stats
        self._session_requests = self._stats.session_requests
        self._trace_local = self.config.trace_local
        self.paths: frozenset[str] | None = (
            frozenset(self.config.paths) if self.config.paths else endpoint_paths(app, holder)
        )
        """Where the MCP endpoint is (requests elsewhere pass untouched and uncounted); None: every path."""
        self.continuity: ContinuityNode | None = _continuity_node(self.config, self.runtime)
        self._binding = ManagerBinding(
            holder, seal=self.continuity.seal if self.continuity is not None else None, on_bind=self._bound
        )
        self._own = OwnSessionPath(app, self.config, self.runtime, self._binding)
        takeover: TakeoverPath | None = None
        fields = None
        if self.continuity is not None and self.runtime.takeover is not None:
            from mcp_registry.paths.takeover import TakeoverPath, takeover_fields

            takeover = TakeoverPath(
                app, self.config, self.runtime, self._binding, self._own, self.continuity, on_adopted
            )
            fields = takeover_fields(self.continuity, self._binding, self.runtime)
        self._stopping: Stopping | None = Stopping() if takeover is not None else None
        """With takeover on: the server stopping ends the GET streams this worker relays from their owner."""
        self._opening = OpeningPath(app, self.runtime, self._binding, fields)
        self._stale = StalePath(
            app, self.config, self.runtime, self._binding, self._opening, self.continuity, takeover
        )
        self._owner: OwnerSide | None = None
        self._lifespan_state: dict[str, object] | None = None
        """The app's lifespan state (the server's `scope["state"]`), for requests forwarded here."""
        if self.continuity is not None:
            from mcp_registry.continuity.owner import OwnerSide

            node = self.continuity
            adopting = takeover is not None
            self._owner = OwnerSide(
                app, worker_id=self.config.worker_id, stats=self._stats, live=lambda: self._live,
                state=lambda: self._lifespan_state, serve_own=self._own.serve, acknowledge_delete=acknowledge_delete,
                draining=lambda: adopting and node.draining,
            )
        if not self.config.record_raw_id:
            _redact.install(self.runtime.hasher.hash)
        if (problem := self._binding.bind()) is not None and self._binding.available:
            raise ConfigError(problem)

    def _bound(self, view: ManagerView) -> None:
        self._live = view.live
        self.runtime.bind(view)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The background work (and, with continuity, the internal listener), for servers without lifespan events."""
        if (problem := self._binding.bind()) is not None and self._binding.available:
            raise ConfigError(problem)
        if self._stopping is not None:
            self._stopping.start()
        async with self.runtime.running():
            if self.continuity is None or self._owner is None:
                yield
            else:
                async with self.continuity.running(self._owner.serve_forwarded):
                    yield

    def serve_forwarded(
        self, scope: Scope, receive: Receive, send: Send, sender: str, session_id: str | None
    ) -> Awaitable[None]:
        """Serve a request another worker forwarded here (see `continuity.owner.OwnerSide`)."""
        assert self._owner is not None, "serve_forwarded needs continuity"
        return self._owner.serve_forwarded(scope, receive, send, sender, session_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self._lifespan_state = scope.get("state")
                await serve_lifespan(
                    self.app, scope, receive, send,
                    running=self.running, bind=self._binding.bind, shutting_down=self._shutting_down,
                )  # fmt: skip
            else:
                await self.app(scope, receive, send)
            return
        if self.paths is not None and route_path(scope) not in self.paths:
            await self.app(scope, receive, send)  # another route of the app: not MCP, not ours
            return
        # The hot path is inline, so that it adds one coroutine frame to the SDK's request: every time
        # the SDK's handler suspends and resumes (several times a request), each frame above it is crossed.
        raw, version = scan_headers(scope["headers"])
        stats = self._stats
        if version is not None and version not in _HANDSHAKE_VERSIONS:
            # 2026-07-28 and later: the SDK's sessionless path; session ids play no part. The client is
            # its User-Agent product (no body read).
            stats.modern_requests += 1
            stats.count_client(stats.client_requests, (MODERN, *user_agent_product(scope["headers"])))
            await self.app(scope, receive, send)
            return
        stats.legacy_requests += 1
        if raw is not None and not self._trace_local and scope["method"] != "DELETE":
            session_id = raw.decode("latin-1")
            if session_id in self._live:  # one of this worker's own sessions: the SDK issued it, it is valid
                stats.local_requests += 1
                per_session = self._session_requests  # folded into per-client counts every second
                per_session[session_id] = per_session.get(session_id, 0) + 1
                current = trace.get_current_span()
                if current.is_recording():
                    self._own.annotate(current, session_id)
                await self.app(scope, receive, send)
                return
        if self._stopping is not None and scope["method"] == "GET":  # a stream, maybe relayed from its owner
            receive = self._stopping.until_stopping(receive)
        header = interpret(raw)
        if header.state is IdState.ABSENT:
            await self._opening(scope, receive, send)
        elif header.value is not None and header.value in self._live:
            await self._own(header.value, scope, receive, send)
        else:
            await self._stale(header, version, scope, receive, send)

    async def _shutting_down(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # (a server that sent no signal: the streams still open end now)
        if self.continuity is not None:
            # Forwarded requests and streams finish (bounded) before the SDK drops its sessions.
            await self.continuity.drain()
        # Record the sessions still held before the SDK's manager forgets them.
        self.runtime.shutting_down()


def route_path(scope: Scope) -> str:
    """The path the app's router matches: `scope["path"]` without the server's root path (`--root-path`),
    as Starlette reads it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _continuity_node(config: RegistryConfig, runtime: WorkerRuntime) -> ContinuityNode | None:
    if not config.continuity.forwards:
        return None
    try:
        from mcp_registry.continuity.node import ContinuityNode  # aiohttp: only when continuity is on
    except ImportError as exc:
        raise ConfigError(
            f"{ENV_CONTINUITY}={config.continuity} needs the continuity extra ({exc.name} is missing): "
            "pip install 'mcp-session-continuity[continuity]'"
        ) from None
    return ContinuityNode(config, runtime.stats, runtime.telemetry)
