"""Learning that the server is stopping as soon as it is told to (SIGTERM), not at its lifespan shutdown.

A server stops in this order: it stops accepting, waits for its open connections to finish (uvicorn:
up to `--timeout-graceful-shutdown`), and only then runs the app's lifespan shutdown. The SDK ends
its own SSE streams when uvicorn stops, but a standalone GET stream this worker *relays* from the
session's owner on another worker (continuity's hop) is that owner's, which is not stopping: the
relay would hold the stopping worker for its whole graceful period. With `uvicorn --workers N` the
supervisor keeps the listening socket open all that time, so every connection a balancer opens
to the host meanwhile waits in its backlog until the host exits (measured: 7 s calls during a
rolling deploy, once per host).

With takeover on, a worker therefore learns of SIGTERM (or SIGINT) itself: `Stopping.install` chains a
handler in front of the server's own (ours first, then the server's, unchanged), and the GET streams
it relays end at once (`until_stopping` makes their `receive` report the client gone). The client
opens its stream again, on a worker that is not stopping. Requests in flight are not touched. Nothing
is installed outside the main thread, or over a handler that is not a Python callable (the default
action, an ignored signal); a handler replaced meanwhile is left alone at `uninstall`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

import anyio
from starlette.types import Message, Receive

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
DISCONNECT: Final[Message] = {"type": "http.disconnect"}
Handler = Callable[[int, FrameType | None], Any]


class Stopping:
    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Handler] = {}

    @property
    def stopping(self) -> bool:
        return self._event is not None and self._event.is_set()

    def install(self) -> None:
        """Chain our handler in front of the server's (call from the event loop, at start-up)."""
        self._event = anyio.Event()
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous) and previous is not self._handle:
                self._previous[sig] = previous
                signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()
        self._loop = None

    def set(self) -> None:
        """The server is stopping (from the loop: the signal handler, or the lifespan shutdown)."""
        if self._event is not None:
            self._event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(self.set)
        previous = self._previous.get(signal.Signals(signum))
        if previous is not None:
            previous(signum, frame)

    def until_stopping(self, receive: Receive) -> Receive:
        """`receive`, except that it reports the client gone once the server is stopping (for a GET stream)."""
        event = self._event
        if event is None:
            return receive

        async def receive_until_stopping() -> Message:
            if event.is_set():
                return DISCONNECT
            message: Message | None = None
            async with anyio.create_task_group() as tg:

                async def get() -> None:
                    nonlocal message
                    message = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(get)
                await event.wait()
                tg.cancel_scope.cancel()
            return message if message is not None else DISCONNECT

        return receive_until_stopping
