"""Learning that the server is stopping as soon as it is told to (SIGTERM), not at its lifespan shutdown.

A server stops in this order: it stops accepting, waits for its open connections to finish (uvicorn:
up to `--timeout-graceful-shutdown`), and only then runs the app's lifespan shutdown. The SDK ends
its own SSE streams when uvicorn stops (sse-starlette watches the server), but a standalone GET
stream this worker *relays* from the session's owner on another worker (continuity's hop) is that
owner's, which is not stopping: the relay would hold the stopping worker for its whole graceful
period. With `uvicorn --workers N` the supervisor keeps the listening socket open all that time, so
every connection a balancer opens to the host meanwhile waits in its backlog until the host exits
(measured: 7 s calls during a rolling deploy, once per host).

With takeover on, a worker therefore watches its server the way sse-starlette does: uvicorn's SIGTERM
handler is a method of its `Server`, whose `should_exit` turns true on the signal. A relayed GET
stream's `receive` (`until_stopping`) polls it while it waits for the client (every `POLL_SECONDS`;
no background task) and then reports the client gone, which ends the relay at once. The client
opens its stream again, on a worker that is not stopping. Requests in flight are not touched, and
no signal handler is replaced. Under a server that exposes no such flag, the streams end at the
lifespan shutdown (`set`).
"""

from __future__ import annotations

import signal
from typing import Final

import anyio
from starlette.types import Message, Receive

POLL_SECONDS: Final = 0.1
DISCONNECT: Final[Message] = {"type": "http.disconnect"}


class Stopping:
    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._server: object | None = None

    @property
    def stopping(self) -> bool:
        if self._event is None:
            return False
        if not self._event.is_set() and getattr(self._server, "should_exit", False):
            self._event.set()
        return self._event.is_set()

    def start(self) -> None:
        """At start-up, in the event loop (uvicorn has installed its handlers by then)."""
        self._event = anyio.Event()
        self._server = signal_server()

    def set(self) -> None:
        """The server is stopping (the lifespan shutdown: under a server whose flag this cannot read)."""
        if self._event is not None:
            self._event.set()

    def until_stopping(self, receive: Receive) -> Receive:
        """`receive`, except that it reports the client gone once the server is stopping (for a GET stream)."""
        event = self._event
        if event is None:
            return receive

        async def receive_until_stopping() -> Message:
            if self.stopping:
                return DISCONNECT
            message: Message | None = None
            async with anyio.create_task_group() as tg:

                async def get() -> None:
                    nonlocal message
                    message = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(get)
                while not self.stopping:
                    with anyio.move_on_after(POLL_SECONDS):
                        await event.wait()
                tg.cancel_scope.cancel()
            return message if message is not None else DISCONNECT

        return receive_until_stopping


def signal_server() -> object | None:
    """The server whose method handles SIGTERM, if it has a `should_exit` flag (uvicorn's `Server`)."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return server if server is not None and hasattr(server, "should_exit") else None
