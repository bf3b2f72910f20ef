"""The pure core: what to do with a request's `mcp-session-id`.

No I/O, no clock, no globals. `scan_headers` reads the raw ASGI headers and `interpret` turns the
id into a `SessionHeader`; `decide` applies the decision table of DESIGN.md:

| request                                   | stateless manager | stateful manager            |
|-------------------------------------------|-------------------|-----------------------------|
| no id                                     | pass              | pass                        |
| id this worker owns                       | pass              | pass                        |
| stale or malformed id, DELETE             | ack_delete        | ack_delete                  |
| stale or malformed id, POST `initialize`  | strip             | strip                       |
| stale or malformed id, anything else      | strip             | `spec`: reject, `strip`: strip |

With continuity on, a valid id whose sealed route names another worker is `forward`ed,
whatever the method: its owner serves it (and answers a DELETE by ending the session).

Only one cell depends on the request body (stateful, `spec`, a POST with a stale id); ask
`needs_body` first and read the body only then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

from mcp_registry.outcomes import Action, StalePolicy

SESSION_HEADER: Final = b"mcp-session-id"
PROTOCOL_VERSION_HEADER: Final = b"mcp-protocol-version"
MAX_ID_BYTES: Final = 256




class IdState(StrEnum):
    """What the header alone says about the id (ownership is the caller's to tell)."""

    ABSENT = "absent"
    VALID = "valid"
    MALFORMED = "malformed"


class SessionHeader(NamedTuple):
    """What a request's `mcp-session-id` header says (a tuple: built on every request, cheaply)."""

    state: IdState
    value: str | None = None
    """The id, only when `state` is VALID."""


ABSENT: Final = SessionHeader(IdState.ABSENT)
MALFORMED: Final = SessionHeader(IdState.MALFORMED)


def parse_session_id(raw: bytes) -> str | None:
    """The id if `raw` is 1–256 bytes of visible ASCII (0x21–0x7E), else None."""
    if not 0 < len(raw) <= MAX_ID_BYTES:
        return None
    # bytes.isascii + isprintable-without-space is the fastest exact check of 0x21..0x7E.
    if not raw.isascii():
        return None
    text = raw.decode("ascii")
    if not text.isprintable() or " " in text:
        return None
    return text


CONFLICTING: Final = b""
"""`scan_headers`'s id when two different `mcp-session-id` values came: empty, so malformed like an empty value."""


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The raw `mcp-session-id` and `mcp-protocol-version` values of ASGI headers, in one pass.

    The request path's only header parser. Names match case-insensitively; repeats of one id
    count as that id, two different values give `CONFLICTING`. Nothing is validated here: a
    value that is a key of the SDK's session table is valid by construction, and `interpret`
    judges the rest.
    """
    found: bytes | None = None
    version: bytes | None = None
    for name, value in headers:
        # ASGI servers send lower-case names. The byte at index 3 is '-' in both names we want and in
        # almost no other header of their lengths (not in content-length), so lower() runs only then.
        size = len(name)
        if size == 14 and name[3] == 45 and (name == SESSION_HEADER or name.lower() == SESSION_HEADER):
            if found is None:
                found = value
            elif value != found:
                found = CONFLICTING
        elif size == 20 and name[3] == 45 and (
            name == PROTOCOL_VERSION_HEADER or name.lower() == PROTOCOL_VERSION_HEADER
        ):
            version = value
    return found, version


def interpret(raw: bytes | None) -> SessionHeader:
    """What a raw `mcp-session-id` (from `scan_headers`) says: absent, a valid id, or malformed."""
    if raw is None:
        return ABSENT
    parsed = parse_session_id(raw)
    return MALFORMED if parsed is None else SessionHeader(IdState.VALID, parsed)


def read_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[SessionHeader, bytes | None]:
    """The `mcp-session-id` and `mcp-protocol-version` of raw ASGI headers, in one pass.

    Names match case-insensitively. Repeats of one id count as that id; two different values, or
    any value that is not 1–256 bytes of visible ASCII, make the id MALFORMED. Never raises on
    header content.
    """
    raw, version = scan_headers(headers)
    return interpret(raw), version


def read_session_header(headers: Iterable[tuple[bytes, bytes]]) -> SessionHeader:
    """The `mcp-session-id` of raw ASGI headers (see `read_headers`)."""
    return read_headers(headers)[0]


@dataclass(frozen=True, slots=True)
class Request:
    """The facts the decision needs, none of which takes I/O to learn."""

    method: str
    header: SessionHeader
    owned: bool
    """This worker's session manager holds the id right now."""
    stateless: bool
    policy: StalePolicy = StalePolicy.SPEC
    owner_elsewhere: bool = False
    """Continuity is on and the id names, under the deployment's MAC, another live worker as its owner."""

    @property
    def stale(self) -> bool:
        """An id is present that this worker cannot serve: unknown here, or malformed."""
        return self.header.state is IdState.MALFORMED or (self.header.state is IdState.VALID and not self.owned)


def needs_body(request: Request) -> bool:
    """Whether `decide` depends on knowing if the body is an `initialize` request."""
    return (
        request.stale
        and not request.owner_elsewhere
        and request.method == "POST"
        and not request.stateless
        and request.policy is StalePolicy.SPEC
    )


def decide(request: Request, *, is_initialize: bool = False) -> Action:
    """Apply the decision table. `is_initialize` matters only where `needs_body` is true."""
    if not request.stale:
        return Action.PASS
    if request.owner_elsewhere:
        return Action.FORWARD
    if request.method == "DELETE":
        return Action.ACK_DELETE
    if request.stateless or request.policy is StalePolicy.STRIP:
        return Action.STRIP
    if request.method == "POST" and is_initialize:
        return Action.STRIP
    return Action.REJECT


USER_AGENT_HEADER: Final = b"user-agent"
UNKNOWN_CLIENT: Final = ("unknown", "unknown")


def user_agent_product(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    """The first product of the `User-Agent` (`name/version`, RFC 9110 §10.1.5): who a sessionless
    request came from, without reading its body. Untrusted text; `("unknown", "unknown")` if none."""
    for name, value in headers:
        if len(name) == 10 and name.lower() == USER_AGENT_HEADER:
            product = value.split(b" ", 1)[0].decode("latin-1")
            product_name, _, version = product.partition("/")
            return (product_name or "unknown", version or "unknown")
    return UNKNOWN_CLIENT


def strip_session_header(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers without any `mcp-session-id`, whatever the case of its name."""
    return [(name, value) for name, value in headers if name.lower() != SESSION_HEADER]


def is_initialize_body(body: bytes) -> bool:
    """Whether a JSON-RPC body is an `initialize` request (a single message or a batch holding one)."""
    return initialize_params(body) is not None


def initialize_params(body: bytes) -> dict[str, object] | None:
    """The params of the `initialize` request in `body`, or None if it holds none. Never raises."""
    # Cheap pre-check (most bodies are not initialize); JSON escapes can spell it otherwise.
    if b'"initialize"' not in body and b"\\u" not in body:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    candidates = message if isinstance(message, list) else [message]
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("method") == "initialize" and "id" in candidate:
            params = candidate.get("params")
            return params if isinstance(params, dict) else {}
    return None
