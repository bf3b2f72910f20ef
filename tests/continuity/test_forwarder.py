"""The forwarder on its own: when a hop is signed, what is replayed when the owner is gone, what it keeps."""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest
from starlette.types import Message, Scope

from mcp_registry.addresses import Address
from mcp_registry.continuity.forwarder import UNIX_PEERS, Forwarder
from mcp_registry.demo._process import free_ports
from mcp_registry.outcomes import ForwardFailure
from mcp_registry.paths.asgi import replay

HOP = [(b"mcp-registry-hop", b"v2.x"), (b"mcp-registry-hop-worker", b"w"), (b"mcp-registry-hop-request", b"{}")]


def scope(path: str = "/mcp", query: bytes = b"") -> Scope:
    return {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": query,
        "headers": [(b"content-type", b"application/json")], "scheme": "http",
    }  # fmt: skip


Receive = Callable[[], Awaitable[Message]]


def body_in(*chunks: bytes, before_each: Callable[[int], Awaitable[None]] | None = None) -> Receive:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    index = 0

    async def receive() -> Message:
        nonlocal index
        if before_each is not None:
            await before_each(index)
        message = messages[index] if index < len(messages) else {"type": "http.disconnect"}
        index += 1
        return message

    return receive


async def discard(_: Message) -> None:
    raise AssertionError("nothing may be sent to the client when the owner is gone")


def nowhere() -> Address:
    """A TCP port nobody listens on: connecting is refused at once."""
    return Address("127.0.0.1", free_ports(1, "127.0.0.1")[0])


async def test_a_hop_is_signed_when_the_client_s_first_body_bytes_have_come() -> None:
    """A slow upload: its hop is as fresh as any other (finding 9: it was signed before the body arrived)."""
    arrived = anyio.Event()
    order: list[str] = []

    async def slow_client(index: int) -> None:
        if index == 0:
            await arrived.wait()
            order.append("body")

    def sign() -> list[tuple[bytes, bytes]]:
        order.append("signed")
        return HOP

    forwarder = Forwarder(timeout=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(forwarder.forward, nowhere(), scope(), body_in(b"{}", before_each=slow_client), discard, sign)
        await anyio.wait_all_tasks_blocked()
        assert order == [], "signed before the client sent its body"
        arrived.set()
    await forwarder.aclose()
    assert order == ["body", "signed"]


async def test_a_streamed_body_is_replayed_whole_when_the_owner_is_gone() -> None:
    """Finding 8: the first chunk of a streamed body was lost, so a re-initialize got 404."""
    forwarder = Forwarder(timeout=5)
    chunks = (b'{"jsonrpc":"2.0","id":1,', b'"method":"initialize","params":{}}')
    client = body_in(*chunks)
    result = await forwarder.forward(nowhere(), scope(), client, discard, lambda: HOP)
    await forwarder.aclose()

    assert result.failure is ForwardFailure.OWNER_GONE
    assert not result.response_started
    # What the worker serves instead: what the hop read, then the rest of what the client sends.
    received = replay(result.replay or [], client)
    body = b""
    while (message := await received())["type"] == "http.request":
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    assert body == b"".join(chunks)


async def test_client_chosen_paths_and_queries_do_not_fill_the_worker_s_memory() -> None:
    """Finding 4: 60 KB query strings filled a 1 024-entry URL cache (114 MiB in the review)."""
    forwarder = Forwarder(timeout=5)
    owner = nowhere()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(300):
            request = scope(path=f"/mcp/{i}/" + "p" * 30_000, query=b"q=" + b"x" * 60_000)
            await forwarder.forward(owner, request, body_in(b"{}"), discard, lambda: HOP)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    await forwarder.aclose()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 4 * 1024 * 1024, f"{grown / 2**20:.1f} MiB kept after 300 hops with 90 KB paths and queries"


async def test_the_client_for_a_unix_socket_peer_is_freed_when_the_peer_is_gone() -> None:
    """Finding 4: one client per Unix-socket path was kept forever (every peer restart leaked)."""
    forwarder = Forwarder(timeout=5)
    with tempfile.TemporaryDirectory() as directory:
        for i in range(3 * UNIX_PEERS):
            peer = Address(None, path=os.path.join(directory, f"gone-{i}.sock"))
            result = await forwarder.forward(peer, scope(), body_in(b"{}"), discard, lambda: HOP)
            assert result.failure is ForwardFailure.OWNER_GONE
            assert len(forwarder._unix) <= 1
    await forwarder.aclose()
    assert forwarder._unix == {}


@pytest.mark.parametrize("count", [UNIX_PEERS + 5])
async def test_live_unix_peers_are_bounded(count: int) -> None:
    forwarder = Forwarder(timeout=5)
    for i in range(count):
        forwarder._session_for(Address(None, path=f"/run/mcp/peer-{i}.sock"))
        assert len(forwarder._unix) <= UNIX_PEERS
    await forwarder.aclose()


async def test_a_kept_alive_connection_the_owner_closed_is_not_a_failed_hop() -> None:
    """An owner's listener closes its idle kept-alive connections as it stops (or when they idle out); a hop sent on
    one of them at that moment met a closed connection before any answer, and the client got 502. It is sent
    once more, on a new connection: the owner answers it, or refuses it (gone) or says it is draining — both of
    which the stale path knows how to take over."""
    answered: list[int] = []

    async def owner(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await stream.receive(65_536)
            answered.append(len(answered))
            if len(answered) == 1:  # the first request on the first connection: answered, connection kept
                await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
                await stream.receive(65_536)  # the next hop on this kept-alive connection…
                return  # …meets it closed, unanswered
            assert request.startswith(b"POST")
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n"
                              b"connection: close\r\n\r\n{}")  # fmt: skip

    sent: list[Message] = []

    async def client(message: Message) -> None:
        sent.append(message)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    forwarder = Forwarder(timeout=5)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, owner)
        first = await forwarder.forward(Address("127.0.0.1", port), scope(), body_in(b"{}"), client, lambda: HOP)
        second = await forwarder.forward(Address("127.0.0.1", port), scope(), body_in(b"{}"), client, lambda: HOP)
        tg.cancel_scope.cancel()
    await forwarder.aclose()

    assert first.failure is None
    assert second.failure is None, "sent again on a new connection, and answered"
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 200]
