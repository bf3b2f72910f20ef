"""`Stopping`: it learns that uvicorn is stopping from the server's own flag (touching no signal handler), and
relayed GET streams then see their client gone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import anyio
import pytest
from starlette.types import Message

from mcp_registry.stopping import DISCONNECT, Stopping


class Server:
    """What uvicorn's `Server` looks like from here: `handle_exit` is the SIGTERM handler; it sets `should_exit`."""

    should_exit = False

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.should_exit = True


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    original = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_sigterm_to_the_server_ends_a_relayed_stream_and_no_handler_is_replaced(server: Server) -> None:
    stopping = Stopping()
    handler = signal.getsignal(signal.SIGTERM)
    stopping.start()
    never = anyio.Event()

    async def receive() -> Message:
        await never.wait()  # a client that stays
        raise AssertionError("unreachable")

    got: list[Message] = []
    async with anyio.create_task_group() as tg:

        async def relay() -> None:
            got.append(await stopping.until_stopping(receive)())

        tg.start_soon(relay)
        await anyio.wait_all_tasks_blocked()
        assert not stopping.stopping
        signal.raise_signal(signal.SIGTERM)
    assert got == [DISCONNECT]
    assert server.should_exit, "the server stops as it would have without us"
    assert signal.getsignal(signal.SIGTERM) == handler, "its handler, which sse-starlette looks for, is untouched"


async def test_under_a_server_it_cannot_watch_only_the_lifespan_shutdown_stops_it() -> None:
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stopping = Stopping()
        stopping.start()
        assert not stopping.stopping
        stopping.set()
        assert stopping.stopping
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_a_stream_sees_its_client_gone_once_stopping_and_not_before() -> None:
    stopping = Stopping()
    stopping.start()
    messages: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]
    never = anyio.Event()

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await never.wait()  # a client that stays: a GET stream's receive waits for its disconnect
        raise AssertionError("unreachable")

    wrapped = stopping.until_stopping(receive)
    assert (await wrapped())["type"] == "http.request", "messages pass through"
    got: list[Message] = []
    async with anyio.create_task_group() as tg:

        async def wait_for_the_end() -> None:
            got.append(await wrapped())

        tg.start_soon(wait_for_the_end)
        await anyio.wait_all_tasks_blocked()
        assert got == [], "nothing happens before the server stops"
        stopping.set()
    assert got == [DISCONNECT]
    assert await wrapped() == DISCONNECT
