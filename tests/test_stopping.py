"""`Stopping`: our SIGTERM handler runs before the server's, and relayed GET streams then see their client gone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import anyio
import pytest
from starlette.types import Message

from mcp_registry.stopping import DISCONNECT, Stopping


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """A server's own SIGTERM handler (as uvicorn installs one), recording what it was called with."""
    calls: list[int] = []

    def handle_exit(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    original = signal.signal(signal.SIGTERM, handle_exit)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_sigterm_sets_stopping_and_still_reaches_the_servers_handler(server_handler: list[int]) -> None:
    stopping = Stopping()
    stopping.install()
    try:
        signal.raise_signal(signal.SIGTERM)
        with anyio.fail_after(5):
            while not stopping.stopping:
                await anyio.sleep(0.01)
    finally:
        stopping.uninstall()
    assert server_handler == [signal.SIGTERM], "the server stops as it would have without us"
    assert getattr(signal.getsignal(signal.SIGTERM), "__name__", None) == "handle_exit", "its handler is back"


async def test_a_handler_replaced_meanwhile_is_left_alone(server_handler: list[int]) -> None:
    stopping = Stopping()
    stopping.install()

    def later(signum: int, frame: FrameType | None) -> None:
        pass

    signal.signal(signal.SIGTERM, later)
    stopping.uninstall()
    assert signal.getsignal(signal.SIGTERM) is later


async def test_a_default_action_is_not_chained() -> None:
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stopping = Stopping()
        stopping.install()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        stopping.uninstall()
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_a_stream_sees_its_client_gone_once_stopping_and_not_before() -> None:
    stopping = Stopping()
    stopping.install()
    messages: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]
    never = anyio.Event()

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await never.wait()  # a client that stays: a GET stream's receive waits for its disconnect
        raise AssertionError("unreachable")

    wrapped = stopping.until_stopping(receive)
    try:
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
    finally:
        stopping.uninstall()
