"""The middleware's part in the ASGI lifespan: start-up binds and starts our work, shutdown drains it.

On start-up our background work (and continuity's listener) starts first; a failure there is told
to the server as `lifespan.startup.failed`, in its own words. When the app reports its start-up
complete the manager is bound (a FastMCP app has only now made it). On shutdown, forwarded
requests finish and the sessions still held are recorded before the SDK drops them; the server's
`shutdown.complete` is held back until our queue has drained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.env import ConfigError


async def serve_lifespan(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    running: Callable[[], AbstractAsyncContextManager[None]],
    bind: Callable[[], str | None],
    shutting_down: Callable[[], Awaitable[None]],
) -> None:
    """Run `app`'s lifespan inside `running()`; `bind()` on start-up, `shutting_down()` on shutdown."""
    held: list[Message] = []
    refused = False

    async def receive_with_shutdown() -> Message:
        if refused:  # we told the server start-up failed: it sends nothing more; let the app wind down
            return {"type": "lifespan.shutdown"}
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await shutting_down()
        return message

    async def send_after_drain(message: Message) -> None:
        nonlocal refused
        if refused:
            return  # the app's own shutdown after a start-up we refused: the server is gone
        if message["type"] == "lifespan.startup.complete" and (problem := bind()) is not None:
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
            await stack.enter_async_context(running())
        except* ConfigError as group:  # e.g. the internal listener's address cannot be bound
            failed = str(group.exceptions[0])
        if failed is not None:
            # Tell the server, in the lifespan's own words: it prints the message and exits.
            if (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": failed})
            return
        await app(scope, receive_with_shutdown, send_after_drain)
    for message in held:
        await send(message)
