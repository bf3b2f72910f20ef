"""Binding to the SDK's session manager, across the app's lifespan cycles.

The middleware finds what holds the manager on the app's Streamable HTTP route (`_sdk.find_holder`),
or is handed the manager. A FastMCP 3.x/4.x app creates its manager in its lifespan, anew on every
cycle: `bind()` takes whatever the holder has now, re-seals its ids when continuity is on, and
tells the listeners (the middleware's hot path, the runtime's book) about the new live table.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from mcp_registry._sdk import (
    ManagerView,
    UnsupportedSDK,
    discard,
    forget_deleted,
    issue_ids_with,
    manager_of,
    principal_of,
)
from mcp_registry.env import ENV_CONTINUITY

NO_MANAGER = (
    "SessionRegistryMiddleware: the app's lifespan started but its Streamable HTTP route still has no "
    "session manager; pass session_manager="
)


class ManagerBinding:
    """The manager the middleware serves now, and the view of it every path reads."""

    def __init__(
        self,
        holder: object,
        *,
        seal: Callable[[str], str] | None,
        on_bind: Callable[[ManagerView], None],
    ) -> None:
        self._holder = holder
        self._seal = seal
        self._on_bind = on_bind
        self.manager: StreamableHTTPSessionManager | None = None
        self.view = ManagerView.unbound()

    @property
    def available(self) -> bool:
        """Whether the holder has a manager at all (an app that makes it in its lifespan has none before)."""
        return manager_of(self._holder) is not None

    def bind(self) -> str | None:
        """Take the manager the holder has now. Returns why it cannot be used, or None."""
        manager = manager_of(self._holder)
        if manager is None:
            return NO_MANAGER
        if manager is self.manager:
            return None
        if self._seal is not None:
            try:
                issue_ids_with(manager, self._seal)
            except UnsupportedSDK as exc:
                return f"{ENV_CONTINUITY}: {exc}"
        self.manager = manager
        self.view = ManagerView.of(manager)
        self._on_bind(self.view)
        return None

    def bind_late(self) -> None:
        """A server without lifespan events, whose app made its manager after start-up."""
        if self.manager is None:
            self.bind()

    def principal(self, session_id: str) -> str | None:
        """The principal the SDK bound `session_id` to (its credential binding), as text; None: none."""
        return principal_of(self.manager, session_id) if self.manager is not None else None

    async def discard(self, session_id: str) -> None:
        """End a session the manager admitted (a refused takeover)."""
        if self.manager is not None:
            await discard(self.manager, session_id)

    def forget_deleted(self, session_id: str) -> None:
        """After the SDK served a DELETE: make sure its table forgets the id (mcp < 1.30 never does)."""
        if self.manager is not None:
            forget_deleted(self.manager, session_id)
