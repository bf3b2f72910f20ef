"""The internal listener's socket: Nagle off for every accepted TCP connection."""

from __future__ import annotations

import asyncio
import socket

from mcp_registry.addresses import Address
from mcp_registry.continuity.listener import _bind


async def test_accepted_tcp_connections_have_nagle_off() -> None:
    """Finding 10: the socket was made with protocol 0, so asyncio skipped TCP_NODELAY: +48 ms per hop."""
    accepted: list[int] = []

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(connected, sock=_bind(Address("127.0.0.1", 0)))
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        async with asyncio.timeout(5):
            while not accepted:
                await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == [1]
