"""A request with no `mcp-session-id`: a session opening, or a request `missing` its id.

On a stateful manager a POST may open a session: its body is teed as the SDK reads it (nothing is
replayed) for the client's name and version, and the id the SDK answers with is recorded as this
worker's. Anything else that is not an `initialize` is `missing` its id (a client or gateway that
dropped it). A stateless manager's requests pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.binding import ManagerBinding
from mcp_registry.decision import initialize_params
from mcp_registry.outcomes import Action, classify_without_id
from mcp_registry.paths.asgi import response_session_id
from mcp_registry.registry.events import ClientInfo
from mcp_registry.runtime import WorkerRuntime

TakeoverFields = Callable[[str, dict[str, object] | None], tuple[str, str] | None]
"""For a session just opened (its id, its `initialize` params): its owner's route and handshake to store."""


class OpeningPath:
    def __init__(
        self, app: ASGIApp, runtime: WorkerRuntime, binding: ManagerBinding, takeover: TakeoverFields | None = None
    ) -> None:
        self._app = app
        self._runtime = runtime
        self._binding = binding
        self._takeover = takeover

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        binding = self._binding
        binding.bind_late()
        view = binding.view
        if view.stateless:
            await self._app(scope, receive, send)
            return
        stats = self._runtime.stats
        if scope["method"] != "POST":
            status = classify_without_id(method=scope["method"], response_status=None, is_initialize=False)
            if status is not None:
                stats.lookups[(status, Action.PASS)] += 1
            await self._app(scope, receive, send)
            return
        teed = bytearray()
        limit = view.max_body_bytes
        runtime = self._runtime

        async def receive_teeing() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(teed) <= limit:
                teed.extend(message.get("body", b""))
            return message

        async def send_capturing(message: Message) -> None:
            if message["type"] == "http.response.start":
                code = message["status"]
                params = initialize_params(bytes(teed)) if len(teed) <= limit else None
                if code < 400:
                    new_id = response_session_id(message)
                    if new_id is not None and new_id in view.live and runtime.book.get(new_id) is None:
                        fields = self._takeover(new_id, params) if self._takeover is not None else None
                        runtime.opened(new_id, ClientInfo.from_initialize(params), fields)
                elif (status := classify_without_id(
                    method="POST", response_status=code, is_initialize=params is not None
                )) is not None:
                    stats.lookups[(status, Action.PASS)] += 1
            await send(message)

        await self._app(scope, receive_teeing, send_capturing)
