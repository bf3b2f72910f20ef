"""ASGI helpers the request paths share: buffer and replay a body, read a response's id, answer here."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from starlette.types import Message, Receive, Send

from mcp_registry.decision import SESSION_HEADER, initialize_params, parse_session_id


async def read_body(receive: Receive, limit: int) -> tuple[list[Message], bool]:
    """Buffer the request body (at most `limit` bytes) and tell whether it is an `initialize`.

    Returns the messages read, to be replayed unchanged. A body over the limit is not parsed
    (the SDK will answer 413); reading stops there and the rest streams through untouched.
    """
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, False  # the client went away
        size += len(message.get("body", b""))
        if size > limit:
            return messages, False
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages)
    return messages, initialize_params(body) is not None


def replay(messages: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A `receive` that gives `messages` first, then whatever `receive` gives."""
    pending = list(messages)

    async def replay_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay_receive


def response_session_id(message: Message) -> str | None:
    """The valid `mcp-session-id` of an `http.response.start` message, if any."""
    for name, value in message.get("headers", ()):
        if name.lower() == SESSION_HEADER:
            return parse_session_id(value)
    return None


async def error(send: Send, status: int, message: str, *, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A JSON-RPC error with no request id, like the SDK's own transport errors."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def acknowledge_delete(send: Send) -> None:
    """Answer a stale DELETE: the session is gone, which is what the client asked for."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
