"""Hostile headers and bodies against the stale-session handler, in process, around the real SDK.

Hypothesis builds raw ASGI requests — any bytes in header names and values, huge values, the
`mcp-session-id` header repeated up to hundreds of times in mixed case, CR/LF and NUL, non-UTF-8,
garbage protocol versions, bodies split at arbitrary points — and sends each one straight into
`SessionRegistryMiddleware` (no HTTP server in between, so nothing sanitises them first).

Between the middleware and the SDK's app sits a recorder, so each case checks what the SDK was
given, not only what the client got back:

- the app never raises and never answers 500;
- the request is routed as the decision table says, judged from what the case was built to be
  (absent, own, stale or malformed id), never by parsing the header again:
  `pass`/`reject` → the SDK gets the headers and body unchanged (a malformed header may be
  replaced); `strip` → the SDK gets them without any `mcp-session-id` header and answers as it
  does for that request without an id; `ack_delete` → the SDK gets nothing and the client gets
  an empty 200;
- a `reject` is the SDK's 404 "Session not found" whenever the header reached it as a real
  server would deliver it (lower-case names).

Every body is checked byte for byte: the one the SDK read is the one the client sent.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import MCPServer
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from mcp_registry import RegistryConfig, SessionRegistryMiddleware
from mcp_registry.outcomes import Action, StalePolicy
from mcp_registry.testing import LEGACY_VERSION, MODERN_VERSION, lifespan

Headers = list[tuple[bytes, bytes]]

SESSION: Final = b"mcp-session-id"
VERSION: Final = b"mcp-protocol-version"
BASE_HEADERS: Final[Headers] = [
    (b"host", b"127.0.0.1:8000"),
    (b"accept", b"application/json, text/event-stream"),
    (b"content-type", b"application/json"),
]
INITIALIZE: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}'
)
TOOL_CALL: Final = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
REQUEST_BOUND: Final = 10.0
FUZZ: Final = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- the apps under test -------------------------------------------------------------------------
@dataclass
class Seen:
    """What the SDK's app was given for one request."""

    headers: Headers
    body: bytearray = field(default_factory=bytearray)
    error: Exception | None = None
    """What the SDK's app raised, if anything."""


class Recorder:
    """An ASGI layer in front of the SDK's app that records every request it lets through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = Seen(headers=list(scope["headers"]))
        self.seen.append(seen)

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen.body += message.get("body", b"")
            return message

        try:
            await self.app(scope, recording_receive, send)
        except Exception as exc:
            seen.error = exc
            raise


@dataclass
class App:
    name: str
    stateless: bool
    policy: StalePolicy
    middleware: SessionRegistryMiddleware
    recorder: Recorder
    live_id: bytes = b""
    """A session this worker holds (stateful apps)."""


def build(name: str, *, stateless: bool, policy: StalePolicy) -> App:
    server = MCPServer("fuzz", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    recorder = Recorder(server.streamable_http_app(json_response=True, stateless_http=stateless))
    middleware = SessionRegistryMiddleware(
        recorder,
        session_manager=server.session_manager,
        config=RegistryConfig(
            worker_id="fuzz", hash_key=b"hT2euAAI2Ks4QT6eDa6vcpYGx7X1rvfmOd-aWO6-bI0", stale_policy=policy
        ),
    )
    return App(name, stateless, policy, middleware, recorder)


@dataclass
class Response:
    status: int
    headers: Headers
    body: bytes


async def call(app: App, method: str, headers: Headers, chunks: list[bytes]) -> Response | None:
    """One raw ASGI request; None if the app sent no response. Raises whatever the app raises."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    started = anyio.Event()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await started.wait()  # the client stays until the answer begins, then goes
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            started.set()

    with anyio.fail_after(REQUEST_BOUND):
        await app.middleware(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if not starts:
        return None
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Response(starts[0]["status"], list(starts[0].get("headers", [])), body)


def new_session_id(response: Response) -> bytes | None:
    for name, value in response.headers:
        if name.lower() == SESSION:
            return value
    return None


async def open_session(app: App) -> bytes:
    response = await call(app, "POST", [*BASE_HEADERS, (VERSION, LEGACY_VERSION.encode())], [INITIALIZE])
    assert response is not None
    assert response.status == 200
    session_id = new_session_id(response)
    assert session_id is not None
    return session_id


@dataclass
class Running:
    portal: BlockingPortal
    apps: dict[str, App]


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """Three apps (stateful `spec`, stateful `strip`, stateless), each running its lifespan."""
    apps = {
        "stateful-spec": build("stateful-spec", stateless=False, policy=StalePolicy.SPEC),
        "stateful-strip": build("stateful-strip", stateless=False, policy=StalePolicy.STRIP),
        "stateless": build("stateless", stateless=True, policy=StalePolicy.SPEC),
    }
    with start_blocking_portal() as portal, ExitStack() as stack:
        for app in apps.values():
            stack.enter_context(portal.wrap_async_context_manager(lifespan(app.middleware)))
            if not app.stateless:
                app.live_id = portal.call(open_session, app)
        yield Running(portal, apps)


# --- the cases -----------------------------------------------------------------------------------
VISIBLE: Final = bytes(range(0x21, 0x7F))
TOKEN: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
"""The characters of a header name as a server delivers it (an HTTP token, lower-cased)."""
BAD_BYTES: Final = [
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
]

valid_ids = st.binary(min_size=1, max_size=256).map(lambda raw: bytes(VISIBLE[b % len(VISIBLE)] for b in raw))


@st.composite
def malformed_values(draw: st.DrawFn) -> list[bytes]:
    """Header values that make the id malformed: one or more values, never a valid single id."""
    kind = draw(st.sampled_from(["empty", "too_long", "bad_byte", "conflicting", "any_bytes"]))
    if kind == "empty":
        return [b""]
    if kind == "too_long":
        return [b"a" * draw(st.sampled_from([257, 1000, 65_536, 1_000_000]))]
    if kind == "bad_byte":
        base = draw(valid_ids)
        at = draw(st.integers(0, len(base)))
        return [base[:at] + draw(st.sampled_from(BAD_BYTES)) + base[at:]]
    if kind == "conflicting":
        first = draw(valid_ids)
        second = draw(valid_ids.filter(lambda v: v != first))
        return [first, second]
    raw = draw(
        st.binary(min_size=1, max_size=300).filter(
            lambda v: not (0 < len(v) <= 256 and v.isascii() and all(0x21 <= c <= 0x7E for c in v))
        )
    )
    return [raw]


def mixed_case(name: bytes, flips: list[bool]) -> bytes:
    """`name` with the letters at the positions `flips` marks upper-cased."""
    return bytes(c - 32 if i < len(flips) and flips[i] and 0x61 <= c <= 0x7A else c for i, c in enumerate(name))


noise_headers = st.lists(
    st.tuples(
        st.binary(min_size=1, max_size=24)
        .map(lambda raw: bytes(TOKEN[b % len(TOKEN)] for b in raw))
        .filter(lambda n: n not in (SESSION, VERSION)),
        st.one_of(st.binary(max_size=120), st.just(b"x" * 200_000)),
    ),
    max_size=6,
)


@dataclass(frozen=True)
class Case:
    app: str
    method: str
    kind: str
    """`absent`, `own`, `stale` or `malformed`: what the case was built to be."""
    body_kind: str
    headers: Headers
    chunks: list[bytes]
    lowercase: bool
    """Every session header name is lower case."""
    handshake_version: bool
    """No version header, or a session-era one (the others skip session handling)."""

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def __repr__(self) -> str:  # hypothesis prints failing cases: keep megabyte values short
        def short(value: bytes) -> str:
            return repr(value) if len(value) <= 80 else f"{value[:60]!r}...({len(value)} bytes)"

        headers = ", ".join(f"({name!r}, {short(value)})" for name, value in self.headers)
        return (
            f"Case(app={self.app!r}, method={self.method!r}, kind={self.kind!r}, body_kind={self.body_kind!r}, "
            f"headers=[{headers}], chunks={[short(c) for c in self.chunks]})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    @property
    def conforming(self) -> bool:
        """Every header name is a lower-case token, as ASGI requires and every HTTP server delivers."""
        return all(set(name) <= set(TOKEN) for name, _ in self.headers)


@st.composite
def cases(draw: st.DrawFn, apps: tuple[str, ...] = ("stateful-spec", "stateful-strip", "stateless")) -> Case:
    app = draw(st.sampled_from(apps))
    method = draw(st.sampled_from(["POST", "POST", "POST", "DELETE", "GET"]))
    kind = draw(st.sampled_from(["absent", "own", "stale", "stale", "malformed", "malformed"]))
    if kind == "own" and (app == "stateless" or method == "GET"):  # no own session there / a GET is a stream
        kind = "stale"
    values: list[bytes] = []
    if kind == "stale":
        values = [draw(valid_ids)]
    elif kind == "malformed":
        values = draw(malformed_values())
    elif kind == "own":
        values = [b"<own>"]  # replaced by the app's live id when the case runs
    repeats = draw(st.integers(1, 3)) if draw(st.booleans()) else draw(st.sampled_from([1, 50, 500]))
    if sum(map(len, values)) > 10_000:
        repeats = 1  # a megabyte once is enough
    mix_case = draw(st.sampled_from([False, False, False, True]))  # a server lower-cases names; ASGI apps may not
    session_headers: Headers = []
    for value in values:
        for _ in range(repeats if len(values) == 1 else 1):
            flips = draw(st.lists(st.booleans(), min_size=len(SESSION), max_size=len(SESSION))) if mix_case else []
            session_headers.append((mixed_case(SESSION, flips), value))

    version_choice = draw(st.sampled_from(["none", "none", "legacy", "legacy", "legacy", "modern", "garbage"]))
    version: list[tuple[bytes, bytes]] = []
    if version_choice == "legacy":
        version = [(VERSION, draw(st.sampled_from(HANDSHAKE_PROTOCOL_VERSIONS)).encode())]
    elif version_choice == "modern":
        version = [(VERSION, MODERN_VERSION.encode())]
    elif version_choice == "garbage":
        garbage = draw(st.binary(max_size=40).filter(lambda v: v.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS))
        flips = draw(st.lists(st.booleans(), min_size=len(VERSION), max_size=len(VERSION))) if mix_case else []
        version = [(mixed_case(VERSION, flips), garbage)]

    body_kind = "none"
    body = b""
    if method == "POST":
        body_kind = draw(st.sampled_from(["initialize", "tool_call", "tool_call", "garbage"]))
        body = {"initialize": INITIALIZE, "tool_call": TOOL_CALL}.get(body_kind) or draw(st.binary(max_size=2000))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)] if body else []

    everything = [*BASE_HEADERS, *version, *draw(noise_headers), *session_headers]
    order = draw(st.permutations(range(len(everything))))
    return Case(
        app=app,
        method=method,
        kind=kind,
        body_kind=body_kind,
        headers=[everything[i] for i in order],
        chunks=chunks,
        lowercase=all(name == SESSION for name, _ in session_headers),
        handshake_version=version_choice in ("none", "legacy"),
    )


def decision_table(case: Case, app: App) -> Action:
    """DESIGN.md's decision table, applied to what the case was built to be."""
    if not case.handshake_version or case.kind in ("absent", "own"):
        return Action.PASS
    if case.method == "DELETE":
        return Action.ACK_DELETE
    if app.stateless or app.policy is StalePolicy.STRIP:
        return Action.STRIP
    if case.method == "POST" and case.body_kind == "initialize":
        return Action.STRIP
    return Action.REJECT


def without_session_headers(headers: Headers) -> Headers:
    return [(name, value) for name, value in headers if name.lower() != SESSION]


async def check(case: Case, running_apps: dict[str, App]) -> None:
    app = running_apps[case.app]
    headers = [(name, app.live_id if value == b"<own>" else value) for name, value in case.headers]
    expected = decision_table(case, app)
    app.recorder.seen.clear()
    try:
        response = await call(app, case.method, headers, case.chunks)
    except Exception:
        # Upper-case header names are not valid ASGI (servers lower-case them), and the SDK fails on
        # some it is handed unchanged (Starlette's `dict(request.headers)`). Our layer never fails.
        if case.conforming or not any(s.error is not None for s in app.recorder.seen):
            raise
        response = None
    seen = list(app.recorder.seen)
    if response is not None:
        assert response.status != 500, response.body[:300]
        await _close_new_session(app, response)
    else:
        assert not case.conforming, "no response was sent"

    if expected is Action.ACK_DELETE:
        assert seen == [], "the SDK saw a stale DELETE"
        assert response is not None
        assert (response.status, response.body) == (200, b"")
        return
    assert len(seen) == 1, f"the SDK saw {len(seen)} requests"
    (given,) = seen
    assert bytes(given.body) == case.body, "the body reached the SDK changed"
    if expected is Action.STRIP:
        assert given.headers == without_session_headers(headers)
        assert response is not None  # without the session headers the scope is conforming
        # ... and the SDK answers as it does to that request without an id.
        app.recorder.seen.clear()
        plain = await call(app, case.method, without_session_headers(headers), case.chunks)
        assert plain is not None
        await _close_new_session(app, plain)
        assert response.status == plain.status
        return
    if expected is Action.REJECT and case.kind == "malformed":
        # Everything but the unusable header reaches the SDK unchanged (what it gets in its place
        # is the handler's choice, as long as the SDK answers 404: checked below).
        assert without_session_headers(given.headers) == without_session_headers(headers)
    else:
        assert given.headers == headers  # pass, and reject of a well-formed id: unchanged
    if response is None:
        return
    if expected is Action.REJECT and case.lowercase:
        assert response.status == 404
        assert b"Session not found" in response.body
    if case.kind == "own" and case.method == "DELETE" and response.status == 200:
        app.live_id = await open_session(app)  # the SDK ended it; keep one live session


async def _close_new_session(app: App, response: Response) -> None:
    """End a session the request opened, so that thousands of cases hold a bounded number."""
    new_id = new_session_id(response)
    if app.stateless or new_id is None or new_id == app.live_id or response.status != 200:
        return
    await call(app, "DELETE", [*BASE_HEADERS, (SESSION, new_id)], [])


@settings(FUZZ, max_examples=2500)
@given(cases())
def test_any_headers_and_bodies_get_the_decision_tables_answer(running: Running, case: Case) -> None:
    expected = decision_table(case, running.apps[case.app])
    event(
        f"{case.app} {expected.value}{'' if case.conforming else ' (upper-case names)'}"
    )  # for --hypothesis-show-statistics
    running.portal.call(check, case, running.apps)


@settings(FUZZ, max_examples=300)
@given(cases(apps=("stateful-spec",)).filter(lambda c: c.method != "GET"), st.sampled_from([200, 1000]))
def test_hundreds_of_repeated_session_headers_of_one_value_read_as_that_value(
    running: Running, case: Case, repeats: int
) -> None:
    """Many identical `mcp-session-id` headers are one id; one different value makes it malformed."""
    app = running.apps["stateful-spec"]
    for value, kind in ((app.live_id, "own"), (b"an-id-nobody-issued", "stale")):
        headers = [*BASE_HEADERS, *[(SESSION, value)] * repeats]
        repeated = Case(case.app, case.method, kind, case.body_kind, headers, case.chunks, True, True)
        running.portal.call(check, repeated, running.apps)
        conflicting = Case(case.app, case.method, "malformed", case.body_kind, [(SESSION, b"other"), *headers],
                           case.chunks, True, True)  # fmt: skip
        running.portal.call(check, conflicting, running.apps)


def test_conflicting_ids_whose_first_value_is_live_are_rejected(running: Running) -> None:
    """The SDK reads the first of several values: a live first value must not be served (found by
    this file's fuzzing; fixed in 0b22cd2)."""
    app = running.apps["stateful-spec"]
    headers = [*BASE_HEADERS, (SESSION, app.live_id), (SESSION, b"another-id")]
    conflicting = Case(app.name, "POST", "malformed", "tool_call", headers, [TOOL_CALL], True, True)
    running.portal.call(check, conflicting, running.apps)
