"""A request on one of this worker's own sessions, beyond the inline hot path.

The middleware serves the common case itself (one frame, no span). This path takes the rest: a
DELETE, which ends the session when the SDK serves it, and the span of its own with
`MCP_SESSION_REGISTRY_TRACE_LOCAL=1`.
"""

from __future__ import annotations

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.binding import ManagerBinding
from mcp_registry.config import RegistryConfig
from mcp_registry.outcomes import Action, Status
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.telemetry import ATTR_ACTION, ATTR_WORKER_ID, SPAN_RESOLVE, annotate


class OwnSessionPath:
    def __init__(self, app: ASGIApp, config: RegistryConfig, runtime: WorkerRuntime, binding: ManagerBinding) -> None:
        self._app = app
        self._config = config
        self._runtime = runtime
        self._binding = binding

    async def __call__(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._runtime.stats
        stats.local_requests += 1
        stats.session_requests[session_id] = stats.session_requests.get(session_id, 0) + 1
        if self._config.trace_local:
            with self._runtime.telemetry.tracer.start_as_current_span(SPAN_RESOLVE) as span:
                self.annotate(span, session_id)
                await self.serve(session_id, scope, receive, send)
            return
        current = trace.get_current_span()
        if current.is_recording():
            self.annotate(current, session_id)
        await self.serve(session_id, scope, receive, send)

    def annotate(self, span: trace.Span, session_id: str) -> None:
        """Classify a request on an own session on `span` (the request's current one, or ours)."""
        annotate(
            span,
            status=Status.LOCAL,
            id_hash=self._runtime.hasher.hash(session_id),
            origin=self._config.worker_id,
            raw_id=session_id if self._config.record_raw_id else None,
        )
        span.set_attribute(ATTR_ACTION, Action.PASS.value)
        span.set_attribute(ATTR_WORKER_ID, self._config.worker_id)

    async def serve(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the SDK; a DELETE it serves ends the session here too."""
        if scope["method"] != "DELETE":
            await self._app(scope, receive, send)
            return

        deleted = False

        async def send_watching_delete(message: Message) -> None:
            nonlocal deleted
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                deleted = True
                self._runtime.deleted(session_id)
            await send(message)

        await self._app(scope, receive, send_watching_delete)
        if deleted:
            self._binding.forget_deleted(session_id)
