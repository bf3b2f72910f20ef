"""The pure core: the decision table of DESIGN.md, the header rules, the body check.

The table below is written out row by row, as data, from DESIGN.md; the property tests then throw
arbitrary headers, methods and bodies at the same functions.
"""

from __future__ import annotations

import json
import re

import pydantic_core
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp.types import JSONRPCRequest, jsonrpc_message_adapter

from mcp_registry.decision import (
    ABSENT,
    MALFORMED,
    IdState,
    Request,
    SessionHeader,
    decide,
    initialize_params,
    is_initialize_body,
    needs_body,
    read_session_header,
    strip_session_header,
    user_agent_product,
)
from mcp_registry.outcomes import Action, StalePolicy

Headers = list[tuple[bytes, bytes]]

SOME_ID = b"0f8e3c2a9b7d4e51a6c0b2d4f6e8a1c3"
HOST = (b"host", b"mcp.example:8000")
ACCEPT = (b"accept", b"application/json, text/event-stream")
CONTENT_TYPE = (b"content-type", b"application/json")

# --------------------------------------------------------------------------------------------
# The decision table
# --------------------------------------------------------------------------------------------

# How each id state of the table reaches the core: real raw ASGI headers, and whether this
# worker's session manager holds the id.
ID_STATES: dict[str, tuple[Headers, bool]] = {
    "absent": ([HOST, ACCEPT], False),
    "owned": ([HOST, (b"mcp-session-id", SOME_ID), ACCEPT], True),
    "stale": ([HOST, (b"mcp-session-id", SOME_ID), ACCEPT], False),
    "malformed": ([HOST, (b"mcp-session-id", b"has space"), ACCEPT], False),
}
# The table's request column: (HTTP method, whether the body is an `initialize` request).
METHODS: dict[str, tuple[str, bool]] = {
    "POST initialize": ("POST", True),
    "POST other": ("POST", False),
    "GET": ("GET", False),
    "DELETE": ("DELETE", False),
    "PUT": ("PUT", False),
}

# id state, request, manager, policy -> action, whether the answer needs the body.
DECISION_TABLE: list[tuple[str, str, str, str, str, bool]] = [
    # no id: always pass
    ("absent", "POST initialize", "stateless", "spec", "pass", False),
    ("absent", "POST initialize", "stateless", "strip", "pass", False),
    ("absent", "POST initialize", "stateful", "spec", "pass", False),
    ("absent", "POST initialize", "stateful", "strip", "pass", False),
    ("absent", "POST other", "stateless", "spec", "pass", False),
    ("absent", "POST other", "stateless", "strip", "pass", False),
    ("absent", "POST other", "stateful", "spec", "pass", False),
    ("absent", "POST other", "stateful", "strip", "pass", False),
    ("absent", "GET", "stateless", "spec", "pass", False),
    ("absent", "GET", "stateless", "strip", "pass", False),
    ("absent", "GET", "stateful", "spec", "pass", False),
    ("absent", "GET", "stateful", "strip", "pass", False),
    ("absent", "DELETE", "stateless", "spec", "pass", False),
    ("absent", "DELETE", "stateless", "strip", "pass", False),
    ("absent", "DELETE", "stateful", "spec", "pass", False),
    ("absent", "DELETE", "stateful", "strip", "pass", False),
    ("absent", "PUT", "stateless", "spec", "pass", False),
    ("absent", "PUT", "stateless", "strip", "pass", False),
    ("absent", "PUT", "stateful", "spec", "pass", False),
    ("absent", "PUT", "stateful", "strip", "pass", False),
    # an id this worker owns: always pass
    ("owned", "POST initialize", "stateless", "spec", "pass", False),
    ("owned", "POST initialize", "stateless", "strip", "pass", False),
    ("owned", "POST initialize", "stateful", "spec", "pass", False),
    ("owned", "POST initialize", "stateful", "strip", "pass", False),
    ("owned", "POST other", "stateless", "spec", "pass", False),
    ("owned", "POST other", "stateless", "strip", "pass", False),
    ("owned", "POST other", "stateful", "spec", "pass", False),
    ("owned", "POST other", "stateful", "strip", "pass", False),
    ("owned", "GET", "stateless", "spec", "pass", False),
    ("owned", "GET", "stateless", "strip", "pass", False),
    ("owned", "GET", "stateful", "spec", "pass", False),
    ("owned", "GET", "stateful", "strip", "pass", False),
    ("owned", "DELETE", "stateless", "spec", "pass", False),
    ("owned", "DELETE", "stateless", "strip", "pass", False),
    ("owned", "DELETE", "stateful", "spec", "pass", False),
    ("owned", "DELETE", "stateful", "strip", "pass", False),
    ("owned", "PUT", "stateless", "spec", "pass", False),
    ("owned", "PUT", "stateless", "strip", "pass", False),
    ("owned", "PUT", "stateful", "spec", "pass", False),
    ("owned", "PUT", "stateful", "strip", "pass", False),
    # a stale id: DELETE is acknowledged, initialize stripped, the rest per manager and policy
    ("stale", "POST initialize", "stateless", "spec", "strip", False),
    ("stale", "POST initialize", "stateless", "strip", "strip", False),
    ("stale", "POST initialize", "stateful", "spec", "strip", True),
    ("stale", "POST initialize", "stateful", "strip", "strip", False),
    ("stale", "POST other", "stateless", "spec", "strip", False),
    ("stale", "POST other", "stateless", "strip", "strip", False),
    ("stale", "POST other", "stateful", "spec", "reject", True),
    ("stale", "POST other", "stateful", "strip", "strip", False),
    ("stale", "GET", "stateless", "spec", "strip", False),
    ("stale", "GET", "stateless", "strip", "strip", False),
    ("stale", "GET", "stateful", "spec", "reject", False),
    ("stale", "GET", "stateful", "strip", "strip", False),
    ("stale", "DELETE", "stateless", "spec", "ack_delete", False),
    ("stale", "DELETE", "stateless", "strip", "ack_delete", False),
    ("stale", "DELETE", "stateful", "spec", "ack_delete", False),
    ("stale", "DELETE", "stateful", "strip", "ack_delete", False),
    ("stale", "PUT", "stateless", "spec", "strip", False),
    ("stale", "PUT", "stateless", "strip", "strip", False),
    ("stale", "PUT", "stateful", "spec", "reject", False),
    ("stale", "PUT", "stateful", "strip", "strip", False),
    # a malformed id: exactly like a stale one
    ("malformed", "POST initialize", "stateless", "spec", "strip", False),
    ("malformed", "POST initialize", "stateless", "strip", "strip", False),
    ("malformed", "POST initialize", "stateful", "spec", "strip", True),
    ("malformed", "POST initialize", "stateful", "strip", "strip", False),
    ("malformed", "POST other", "stateless", "spec", "strip", False),
    ("malformed", "POST other", "stateless", "strip", "strip", False),
    ("malformed", "POST other", "stateful", "spec", "reject", True),
    ("malformed", "POST other", "stateful", "strip", "strip", False),
    ("malformed", "GET", "stateless", "spec", "strip", False),
    ("malformed", "GET", "stateless", "strip", "strip", False),
    ("malformed", "GET", "stateful", "spec", "reject", False),
    ("malformed", "GET", "stateful", "strip", "strip", False),
    ("malformed", "DELETE", "stateless", "spec", "ack_delete", False),
    ("malformed", "DELETE", "stateless", "strip", "ack_delete", False),
    ("malformed", "DELETE", "stateful", "spec", "ack_delete", False),
    ("malformed", "DELETE", "stateful", "strip", "ack_delete", False),
    ("malformed", "PUT", "stateless", "spec", "strip", False),
    ("malformed", "PUT", "stateless", "strip", "strip", False),
    ("malformed", "PUT", "stateful", "spec", "reject", False),
    ("malformed", "PUT", "stateful", "strip", "strip", False),
]


def test_the_table_covers_every_combination_once() -> None:
    combinations = [row[:4] for row in DECISION_TABLE]
    assert len(set(combinations)) == len(combinations) == 4 * 5 * 2 * 2


@pytest.mark.parametrize(
    ("id_state", "request_kind", "manager", "policy", "expected", "expected_needs_body"),
    [pytest.param(*row, id="-".join(row[:4])) for row in DECISION_TABLE],
)
def test_decision_table(
    id_state: str, request_kind: str, manager: str, policy: str, expected: str, expected_needs_body: bool
) -> None:
    raw_headers, owned = ID_STATES[id_state]
    method, body_is_initialize = METHODS[request_kind]
    request = Request(
        method=method,
        header=read_session_header(raw_headers),
        owned=owned,
        stateless=manager == "stateless",
        policy=StalePolicy(policy),
    )

    assert needs_body(request) is expected_needs_body
    if expected_needs_body:
        action = decide(request, is_initialize=body_is_initialize)
    else:
        # A caller that was told the body does not matter never reads it, and the answer is
        # the same whatever the body is.
        action = decide(request)
        assert decide(request, is_initialize=True) == decide(request, is_initialize=False) == action
    assert action == Action(expected)


# --------------------------------------------------------------------------------------------
# Continuity: a valid id whose sealed route names another live worker
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_kind", list(METHODS))
@pytest.mark.parametrize("manager", ["stateless", "stateful"])
@pytest.mark.parametrize("policy", ["spec", "strip"])
def test_an_id_owned_elsewhere_is_forwarded_whatever_the_method_and_without_the_body(
    request_kind: str, manager: str, policy: str
) -> None:
    method, _ = METHODS[request_kind]
    request = Request(
        method=method,
        header=read_session_header(ID_STATES["stale"][0]),
        owned=False,
        stateless=manager == "stateless",
        policy=StalePolicy(policy),
        owner_elsewhere=True,
    )

    assert needs_body(request) is False
    assert decide(request, is_initialize=True) == decide(request, is_initialize=False) == Action.FORWARD


@pytest.mark.parametrize("id_state", ["absent", "owned"])
def test_a_request_this_worker_serves_itself_is_never_forwarded(id_state: str) -> None:
    raw_headers, owned = ID_STATES[id_state]
    request = Request(
        method="POST", header=read_session_header(raw_headers), owned=owned, stateless=False, owner_elsewhere=True
    )

    assert decide(request) is Action.PASS


def test_action_values_are_the_span_attribute_values() -> None:
    assert [action.value for action in Action] == ["pass", "strip", "ack_delete", "reject", "forward", "adopt"]


def test_ownership_does_not_rescue_a_malformed_id() -> None:
    request = Request(method="GET", header=MALFORMED, owned=True, stateless=False)

    assert decide(request) is Action.REJECT


def test_policy_defaults_to_spec() -> None:
    request = Request(method="POST", header=SessionHeader(IdState.VALID, "gone"), owned=False, stateless=False)

    assert needs_body(request)
    assert decide(request, is_initialize=False) is Action.REJECT


# --------------------------------------------------------------------------------------------
# read_session_header
# --------------------------------------------------------------------------------------------

VISIBLE_ASCII = bytes(range(0x21, 0x7F))
INVISIBLE_BYTES = [b for b in range(256) if not 0x21 <= b <= 0x7E]


def valid(value: bytes) -> SessionHeader:
    return SessionHeader(IdState.VALID, value.decode("ascii"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], ABSENT, id="no headers"),
        pytest.param([HOST, ACCEPT, CONTENT_TYPE], ABSENT, id="no session header"),
        pytest.param([(b"mcp-session-id", SOME_ID)], valid(SOME_ID), id="lower case name"),
        pytest.param([(b"Mcp-Session-Id", SOME_ID)], valid(SOME_ID), id="title case name"),
        pytest.param([(b"MCP-SESSION-ID", SOME_ID)], valid(SOME_ID), id="upper case name"),
        pytest.param([(b"mCp-SeSsIoN-iD", SOME_ID)], valid(SOME_ID), id="mixed case name"),
        pytest.param([HOST, (b"mcp-session-id", SOME_ID), ACCEPT], valid(SOME_ID), id="among others"),
        # names that only look like it
        pytest.param([(b"x-mcp-session-id", SOME_ID)], ABSENT, id="prefixed name"),
        pytest.param([(b"mcp-session-id2", SOME_ID)], ABSENT, id="suffixed name"),
        pytest.param([(b"mcp_session_id", SOME_ID)], ABSENT, id="underscores"),
        pytest.param([(b"mcp-session-id ", SOME_ID)], ABSENT, id="trailing space in name"),
        pytest.param([(b"mcp-session", SOME_ID)], ABSENT, id="truncated name"),
        # repeats
        pytest.param(
            [(b"mcp-session-id", SOME_ID), (b"mcp-session-id", SOME_ID)], valid(SOME_ID), id="same value twice"
        ),
        pytest.param(
            [(b"Mcp-Session-Id", SOME_ID), HOST, (b"MCP-SESSION-ID", SOME_ID), (b"mcp-session-id", SOME_ID)],
            valid(SOME_ID),
            id="same value three times, names in any case",
        ),
        pytest.param([(b"mcp-session-id", b"a"), (b"mcp-session-id", b"b")], MALFORMED, id="two values"),
        pytest.param([(b"mcp-session-id", b"abc"), (b"Mcp-Session-Id", b"ABC")], MALFORMED, id="values differ in case"),
        pytest.param(
            [(b"mcp-session-id", b"a"), (b"mcp-session-id", b"b"), (b"mcp-session-id", b"a")],
            MALFORMED,
            id="a different value between two equal ones",
        ),
        pytest.param(
            [(b"mcp-session-id", SOME_ID), (b"mcp-session-id", b"")], MALFORMED, id="a valid value then empty"
        ),
        pytest.param(
            [(b"mcp-session-id", b"bad id"), (b"mcp-session-id", b"bad id")],
            MALFORMED,
            id="same malformed value twice",
        ),
        # lengths
        pytest.param([(b"mcp-session-id", b"")], MALFORMED, id="empty"),
        pytest.param([(b"mcp-session-id", b"x")], valid(b"x"), id="1 byte"),
        pytest.param([(b"mcp-session-id", b"x" * 256)], valid(b"x" * 256), id="256 bytes"),
        pytest.param([(b"mcp-session-id", b"x" * 257)], MALFORMED, id="257 bytes"),
        pytest.param([(b"mcp-session-id", b"x" * 1_000_000)], MALFORMED, id="1 MB"),
        # the visible ASCII range, edges included
        pytest.param([(b"mcp-session-id", b"!")], valid(b"!"), id="0x21"),
        pytest.param([(b"mcp-session-id", b"~")], valid(b"~"), id="0x7E"),
        pytest.param([(b"mcp-session-id", VISIBLE_ASCII)], valid(VISIBLE_ASCII), id="all of 0x21-0x7E"),
        # bytes outside it
        pytest.param([(b"mcp-session-id", b"has space")], MALFORMED, id="inner space"),
        pytest.param([(b"mcp-session-id", b" " + SOME_ID)], MALFORMED, id="leading space"),
        pytest.param([(b"mcp-session-id", SOME_ID + b" ")], MALFORMED, id="trailing space"),
        pytest.param([(b"mcp-session-id", b"a\tb")], MALFORMED, id="tab"),
        pytest.param([(b"mcp-session-id", b"a\rb")], MALFORMED, id="CR"),
        pytest.param([(b"mcp-session-id", b"a\nb")], MALFORMED, id="LF"),
        pytest.param([(b"mcp-session-id", SOME_ID + b"\r\nx-injected: 1")], MALFORMED, id="CRLF injection"),
        pytest.param([(b"mcp-session-id", b"a\x00b")], MALFORMED, id="NUL"),
        pytest.param([(b"mcp-session-id", b"a\x7fb")], MALFORMED, id="DEL 0x7F"),
        pytest.param([(b"mcp-session-id", b"a\x80b")], MALFORMED, id="0x80"),
        pytest.param([(b"mcp-session-id", b"a\xffb")], MALFORMED, id="0xFF"),
        pytest.param([(b"mcp-session-id", "caf\u00e9".encode())], MALFORMED, id="UTF-8 non-ASCII"),
        pytest.param([(b"mcp-session-id", b"\xc3\x28")], MALFORMED, id="invalid UTF-8"),
        pytest.param([(b"mcp-session-id", "\u00e9".encode("latin-1"))], MALFORMED, id="latin-1"),
    ],
)
def test_read_session_header(headers: Headers, expected: SessionHeader) -> None:
    assert read_session_header(headers) == expected


@pytest.mark.parametrize("byte", INVISIBLE_BYTES, ids=lambda b: f"0x{b:02X}")
def test_any_byte_outside_visible_ascii_makes_the_id_malformed(byte: int) -> None:
    assert read_session_header([(b"mcp-session-id", b"abc" + bytes([byte]) + b"def")]) == MALFORMED


def test_read_session_header_accepts_any_iterable_of_headers() -> None:
    headers = iter([HOST, (b"mcp-session-id", SOME_ID)])

    assert read_session_header(headers) == valid(SOME_ID)


# --------------------------------------------------------------------------------------------
# strip_session_header
# --------------------------------------------------------------------------------------------


def test_strip_removes_every_case_variant_and_keeps_the_rest_in_order() -> None:
    headers = [
        HOST,
        (b"Mcp-Session-Id", SOME_ID),
        ACCEPT,
        (b"MCP-SESSION-ID", b"bad id"),
        (b"x-trace", b"1"),
        (b"mcp-session-id", SOME_ID),
        (b"x-trace", b"2"),
        (b"x-mcp-session-id", b"kept"),
        (b"mcp-protocol-version", b"2025-06-18"),
        CONTENT_TYPE,
    ]

    stripped = strip_session_header(headers)

    assert stripped == [
        HOST,
        ACCEPT,
        (b"x-trace", b"1"),
        (b"x-trace", b"2"),
        (b"x-mcp-session-id", b"kept"),
        (b"mcp-protocol-version", b"2025-06-18"),
        CONTENT_TYPE,
    ]
    assert read_session_header(stripped) == ABSENT


def test_strip_leaves_the_input_untouched() -> None:
    headers = [HOST, (b"mcp-session-id", SOME_ID)]

    strip_session_header(headers)

    assert headers == [HOST, (b"mcp-session-id", SOME_ID)]


@pytest.mark.parametrize("headers", [[], [HOST, ACCEPT, CONTENT_TYPE]], ids=["empty", "no session header"])
def test_strip_without_a_session_header_changes_nothing(headers: Headers) -> None:
    assert strip_session_header(headers) == headers


# --------------------------------------------------------------------------------------------
# initialize_params / is_initialize_body
# --------------------------------------------------------------------------------------------

CLIENT_INFO = {"name": "cursor", "version": "1.2.3"}
INIT_PARAMS = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": CLIENT_INFO}


def body(message: object) -> bytes:
    return json.dumps(message).encode()


def init_request(request_id: object = 1, params: object = INIT_PARAMS) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


TOOLS_CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add"}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}

INITIALIZE_BODIES = [
    pytest.param(body(init_request()), INIT_PARAMS, id="initialize"),
    pytest.param(body(init_request(request_id="req-1")), INIT_PARAMS, id="string id"),
    pytest.param(body(init_request(request_id=0)), INIT_PARAMS, id="id 0"),
    pytest.param(
        b'{"params":{"clientInfo":{"name":"x"}},"method":"initialize","id":7,"jsonrpc":"2.0"}',
        {"clientInfo": {"name": "x"}},
        id="keys in another order",
    ),
    pytest.param(
        b' {\n  "jsonrpc" : "2.0",\n  "id" : 1,\n  "method" : "initialize"\n}\n', {}, id="whitespace, no params"
    ),
    pytest.param(body(init_request(params=None)), {}, id="null params"),
    pytest.param(body([INITIALIZED, init_request(), TOOLS_CALL]), INIT_PARAMS, id="batch holding one"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"\\u0069nitialize","params":{}}', {}, id="method with JSON escapes"
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientInfo":{"name":"\\u00e9diteur"}}}',
        {"clientInfo": {"name": "\u00e9diteur"}},
        id="escaped client name",
    ),
]

NOT_INITIALIZE_BODIES = [
    pytest.param(body(TOOLS_CALL), id="tools/call"),
    pytest.param(body(INITIALIZED), id="notifications/initialized"),
    pytest.param(body({"jsonrpc": "2.0", "method": "initialize", "params": {}}), id="initialize without id"),
    pytest.param(body([{"jsonrpc": "2.0", "method": "initialize"}]), id="batch: initialize without id"),
    pytest.param(body([TOOLS_CALL, INITIALIZED]), id="batch without initialize"),
    pytest.param(
        body({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "initialize"}}),
        id="initialize as a tool name",
    ),
    pytest.param(body({"jsonrpc": "2.0", "id": 1, "result": "initialize"}), id="a response"),
    pytest.param(body({"jsonrpc": "2.0", "id": 1, "method": "Initialize"}), id="other case"),
    pytest.param(body({"jsonrpc": "2.0", "id": 1, "method": ["initialize"]}), id="method is a list"),
    pytest.param(body(["initialize", 1]), id="batch of scalars"),
    pytest.param(body("initialize"), id="a JSON string"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="empty batch"),
    pytest.param(b"{}", id="empty object"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"initialize"', id="truncated"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"initialize"} trailing', id="trailing garbage"),
    pytest.param(b'{"method":"initialize","id":1,"params":{"x":"\xff"}}', id="invalid UTF-8"),
    pytest.param(b'{"method":"initialize","id":1,"params":{"n":' + b"9" * 10_000 + b"}}", id="10k-digit number"),
    pytest.param(b"[" * 100_000 + b'{"method":"initialize","id":1}', id="100k nested arrays"),
    pytest.param(b'{"a":' * 100_000 + b'"initialize"', id="100k nested objects"),
    pytest.param(bytes(range(256)) + b'"initialize"', id="binary garbage"),
]


@pytest.mark.parametrize(("raw", "expected"), INITIALIZE_BODIES)
def test_initialize_params_of_an_initialize_request(raw: bytes, expected: dict[str, object]) -> None:
    assert initialize_params(raw) == expected
    assert is_initialize_body(raw)


@pytest.mark.parametrize("raw", NOT_INITIALIZE_BODIES)
def test_initialize_params_of_anything_else_is_none(raw: bytes) -> None:
    assert initialize_params(raw) is None
    assert not is_initialize_body(raw)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

MANY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spell_session_header(case_mask: int) -> bytes:
    """`mcp-session-id` with the letters whose bit is set in `case_mask` in upper case."""
    return "".join(c.upper() if case_mask >> i & 1 else c for i, c in enumerate("mcp-session-id")).encode()


session_header_names = st.integers(0, 2**14 - 1).map(spell_session_header)
other_header_names = st.one_of(
    st.sampled_from([b"host", b"x-mcp-session-id", b"mcp-session-id2", b"mcp-session", b"mcp_session_id"]),
    st.binary(max_size=20),
)
valid_ids = st.text(alphabet=VISIBLE_ASCII.decode(), min_size=1, max_size=258).map(str.encode)
header_values = st.one_of(
    st.sampled_from([SOME_ID, b"", b"x" * 256, b"x" * 257, b"a b", b"a\r\nb", b"\x00", b"\x7f", b"\xc3\x28"]),
    valid_ids,
    st.binary(max_size=300),
    # huge values, cheap to build
    st.builds(lambda chunk, times: chunk * times, st.binary(min_size=1, max_size=3), st.integers(0, 200_000)),
)
raw_headers = st.lists(st.tuples(st.one_of(session_header_names, other_header_names), header_values), max_size=8)
# Many repeats of one value under names of any case: the shape that must come out VALID.
repeated_headers = st.tuples(valid_ids, st.lists(session_header_names, min_size=1, max_size=30)).map(
    lambda value_names: [(name, value_names[0]) for name in value_names[1]]
)
ID_PATTERN = re.compile(rb"[\x21-\x7e]{1,256}")


@MANY
@given(st.one_of(raw_headers, repeated_headers))
def test_read_session_header_never_raises_and_accepts_exactly_the_valid_ids(headers: Headers) -> None:
    result = read_session_header(headers)

    values = {value for name, value in headers if name.lower() == b"mcp-session-id"}
    if not values:
        assert result == ABSENT
    elif len(values) == 1 and ID_PATTERN.fullmatch(next(iter(values))):
        assert result == SessionHeader(IdState.VALID, next(iter(values)).decode("ascii"))
    else:
        assert result == MALFORMED


@settings(MANY, max_examples=300)
@given(raw_headers)
def test_strip_session_header_removes_exactly_the_session_headers(headers: Headers) -> None:
    stripped = strip_session_header(headers)

    assert read_session_header(stripped) == ABSENT
    # `stripped` is `headers` in order, less some headers, and each one left out is a session header.
    position = 0
    for header in headers:
        if position < len(stripped) and stripped[position] == header:
            position += 1
        else:
            assert read_session_header([header]) != ABSENT
    assert position == len(stripped)


methods = st.one_of(
    st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "delete", "post", ""]),
    st.text(max_size=10),
)
session_headers = st.one_of(
    st.sampled_from([ABSENT, MALFORMED]), st.builds(SessionHeader, st.just(IdState.VALID), st.text())
)
requests = st.builds(
    Request,
    method=methods,
    header=session_headers,
    owned=st.booleans(),
    stateless=st.booleans(),
    policy=st.sampled_from(StalePolicy),
)


@MANY
@given(requests, st.booleans())
def test_decide_never_raises_and_keeps_the_table_invariants(req: Request, is_initialize: bool) -> None:
    action = decide(req, is_initialize=is_initialize)
    id_is_served_here = req.header.state is IdState.ABSENT or (req.header.state is IdState.VALID and req.owned)

    stripping_allowed = req.stateless or req.policy is StalePolicy.STRIP
    opens_a_new_session = req.method == "POST" and is_initialize

    if id_is_served_here:
        assert action is Action.PASS
    elif req.method == "DELETE":
        assert action is Action.ACK_DELETE
    elif stripping_allowed or opens_a_new_session:
        assert action is Action.STRIP
    else:
        assert action is Action.REJECT

    if not needs_body(req):
        assert decide(req, is_initialize=not is_initialize) == action


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.just("initialize"),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["jsonrpc", "id", "method", "params", "x"]) | st.text(max_size=5), children, max_size=5
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=500),
    # past the cheap pre-check, into the parser
    st.builds(lambda head, tail: head + b'"initialize"' + tail, st.binary(max_size=50), st.binary(max_size=50)),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda depth, opener: opener * depth + b'{"method":"initialize","id":1}',
        st.integers(0, 50_000),
        st.sampled_from([b"[", b'{"a":', b"[{}, "]),
    ),
)


@settings(MANY, max_examples=1000)
@given(bodies)
def test_initialize_params_never_raises(raw: bytes) -> None:
    params = initialize_params(raw)

    assert params is None or isinstance(params, dict)
    assert is_initialize_body(raw) is (params is not None)


def sdk_sees_initialize(raw: bytes) -> bool:
    """How the SDK's transport tells an `initialize` (mcp/server/streamable_http.py, _handle_post_request)."""
    try:
        message = jsonrpc_message_adapter.validate_python(pydantic_core.from_json(raw), by_name=False)
    except ValueError:
        return False
    return isinstance(message, JSONRPCRequest) and message.method == "initialize"


def json_string(text: str, escape_mask: int) -> str:
    """`text` as a JSON string literal, the characters whose bit is set written as \\uXXXX escapes."""
    chars = (f"\\u{ord(c):04x}" if escape_mask >> i & 1 else json.dumps(c)[1:-1] for i, c in enumerate(text))
    return '"' + "".join(chars) + '"'


@st.composite
def initialize_requests(draw: st.DrawFn) -> bytes:
    """An `initialize` request as any JSON encoder may spell it: key order, spaces, escapes."""
    request_id = draw(st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=8)))
    fields = {
        "jsonrpc": json.dumps("2.0"),
        "id": json.dumps(request_id, ensure_ascii=draw(st.booleans())),
        "method": json_string("initialize", draw(st.integers(0, 2**10 - 1))),
    }
    if draw(st.booleans()):
        params = draw(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3))
        fields["params"] = json.dumps(params, ensure_ascii=draw(st.booleans()))
    space = draw(st.sampled_from(["", " ", "\n", "\t", "\r\n  "]))
    keys = draw(st.permutations(list(fields)))
    members = [f"{json.dumps(key)}{space}:{space}{fields[key]}" for key in keys]
    return ("{" + space + f",{space}".join(members) + space + "}").encode()


@settings(MANY, max_examples=500)
@example(b'{"jsonrpc":"2.0","id":1,"method":"\\u0069nitialize"}')
@given(initialize_requests())
def test_every_body_the_sdk_takes_for_initialize_is_recognised(raw: bytes) -> None:
    # Missing one means a stale id on an `initialize` gets the SDK's 404 instead of a new session.
    assert sdk_sees_initialize(raw)
    assert is_initialize_body(raw)


@pytest.mark.parametrize(
    ("headers", "product"),
    [
        ([(b"user-agent", b"claude-code/2.1.4 (linux; x64) node/22")], ("claude-code", "2.1.4")),
        ([(b"User-Agent", b"python-httpx/0.28.1")], ("python-httpx", "0.28.1")),
        ([(b"user-agent", b"curl")], ("curl", "unknown")),
        ([(b"user-agent", b"/1.0")], ("unknown", "1.0")),
        ([(b"user-agent", b"")], ("unknown", "unknown")),
        ([(b"accept", b"*/*")], ("unknown", "unknown")),
        ([(b"user-agent", "caf\u00e9/\u00e9".encode("latin-1"))], ("caf\u00e9", "\u00e9")),
    ],
)
def test_a_sessionless_client_is_its_user_agent_product(headers: list[tuple[bytes, bytes]], product: object) -> None:
    assert user_agent_product(headers) == product
