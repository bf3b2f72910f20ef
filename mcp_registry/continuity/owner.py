"""The owner's side of a hop: serve a request another worker forwarded here.

The internal listener (`continuity.listener`) has verified the hop and put back the client's
request; this serves it as the owner would serve the client directly (with the app's lifespan
state, as the server gives every request), and marks the answer for the forwarding worker: which worker
answered, and whether it still holds the session (if not, the SDK's 404 or our DELETE answer
goes back, marked gone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.continuity.hop import DRAINING_HEADER, GONE_HEADER, OWNER_HEADER
from mcp_registry.telemetry import RequestStats

ServeOwn = Callable[[str, Scope, Receive, Send], Awaitable[None]]
AcknowledgeDelete = Callable[[Send], Awaitable[None]]


class OwnerSide:
    def __init__(
        self,
        app: ASGIApp,
        *,
        worker_id: str,
        stats: RequestStats,
        live: Callable[[], Mapping[str, object]],
        state: Callable[[], Mapping[str, object] | None],
        draining: Callable[[], bool] = lambda: False,
        serve_own: ServeOwn,
        acknowledge_delete: AcknowledgeDelete,
    ) -> None:
        self._app = app
        self._stats = stats
        self._live = live
        self._state = state
        self._draining = draining
        self._serve_own = serve_own
        self._acknowledge_delete = acknowledge_delete
        self._owner_marks = [(OWNER_HEADER, worker_id.encode())]
        self._gone_marks = [*self._owner_marks, (GONE_HEADER, b"1")]

    def serve_forwarded(
        self, scope: Scope, receive: Receive, send: Send, sender: str, session_id: str | None
    ) -> Awaitable[None]:
        """Serve a request `sender` forwarded here (its hop, for `session_id`, verified by the listener).

        Returns the coroutine to await rather than awaiting it: no coroutine frame of its own on the path.
        """
        if self._draining():
            # Shutting down with takeover on: the sender adopts the session instead (`owner_draining`).
            return _refuse_draining(send)
        self._stats.served_for[sender] += 1
        if (state := self._state()) is not None:
            # The app's lifespan state, as its server gives every request (a shallow copy).
            scope["state"] = dict(state)
        live = session_id is not None and session_id in self._live()
        marks = self._owner_marks if live else self._gone_marks

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *marks]}
            await send(message)

        if live:
            assert session_id is not None
            # A request on this session like any other, and one that hopped (the migration view's counts).
            for per_session in (self._stats.session_requests, self._stats.session_hops):
                per_session[session_id] = per_session.get(session_id, 0) + 1
        if live and scope["method"] != "DELETE":
            return self._app(scope, receive, send_marked)
        if live:
            assert session_id is not None
            return self._serve_own(session_id, scope, receive, send_marked)
        if scope["method"] == "DELETE":
            return self._acknowledge_delete(send_marked)
        return self._app(scope, receive, send_marked)  # the SDK answers 404 "Session not found"


async def _refuse_draining(send: Send) -> None:
    headers = [(DRAINING_HEADER, b"1"), (b"content-length", b"0"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
