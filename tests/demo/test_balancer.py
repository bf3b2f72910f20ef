"""The balancer, as a real child process, in front of small upstream apps served by uvicorn threads."""

from __future__ import annotations

import asyncio
import itertools
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mcp_registry.demo._process import free_ports
from mcp_registry.demo.balancer import Balancer

pytestmark = pytest.mark.integration


def upstream_app(name: str) -> Starlette:
    """An upstream that says who it is and what it received, and streams an SSE response on demand."""
    release = asyncio.Event()

    async def whoami(request: Request) -> Response:
        seen = request.headers.getlist("mcp-session-id")
        names = ",".join(sorted({key for key, _ in request.headers.items()}))
        return PlainTextResponse(name, headers={"x-seen-ids": repr(seen), "x-seen-names": names})

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, headers={"x-upstream": name})

    async def not_found(request: Request) -> Response:
        response = PlainTextResponse("gone", status_code=404, headers={"x-custom": "kept"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await release.wait()
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def let_go(request: Request) -> Response:
        release.set()
        return PlainTextResponse("released")

    return Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/echo", echo, methods=["POST"]),
            Route("/missing", not_found),
            Route("/events", events),
            Route("/release", let_go, methods=["POST"]),
        ]
    )


@contextmanager
def serve(name: str) -> Iterator[str]:
    """Serve `upstream_app(name)` on a free port from a thread; yield its base URL."""
    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(upstream_app(name), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), f"upstream {name} crashed"
        assert time.monotonic() < deadline, f"upstream {name} did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def two_upstreams() -> Iterator[tuple[str, str]]:
    with serve("A") as a, serve("B") as b:
        yield a, b


def test_consecutive_requests_on_one_connection_go_to_alternate_upstreams(two_upstreams: tuple[str, str]) -> None:
    with Balancer(two_upstreams) as balancer, httpx.Client(base_url=balancer.url) as http:
        served = [http.get("/whoami").text for _ in range(6)]
        stats = balancer.stats()
    assert set(served) == {"A", "B"}
    assert all(first != second for first, second in itertools.pairwise(served))
    assert stats == {two_upstreams[0]: 3, two_upstreams[1]: 3}


def test_status_headers_and_duplicate_headers_pass_through(two_upstreams: tuple[str, str]) -> None:
    with Balancer(two_upstreams[:1]) as balancer, httpx.Client(base_url=balancer.url) as http:
        missing = http.get("/missing")
        seen = http.get("/whoami", headers=[("mcp-session-id", "one"), ("mcp-session-id", "two")])
    assert (missing.status_code, missing.text, missing.headers["x-custom"]) == (404, "gone", "kept")
    assert missing.headers.get_list("set-cookie") == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]
    assert seen.headers["x-seen-ids"] == repr(["one", "two"])


def test_the_upstream_gets_the_clients_headers_and_no_others(two_upstreams: tuple[str, str]) -> None:
    with Balancer(two_upstreams[:1]) as balancer, httpx.Client(base_url=balancer.url) as http:
        http.headers.clear()
        seen = http.get("/whoami", headers={"x-a": "1", "connection": "keep-alive"})
    assert seen.headers["x-seen-names"] == "host,x-a"


def test_a_chunked_request_body_reaches_the_upstream_unchanged(two_upstreams: tuple[str, str]) -> None:
    chunks = [bytes([i]) * 65_536 for i in range(8)]
    with Balancer(two_upstreams[:1]) as balancer, httpx.Client(base_url=balancer.url) as http:
        response = http.post("/echo", content=iter(chunks))  # sent chunked, without a length
    assert response.content == b"".join(chunks)


async def test_an_sse_response_reaches_the_client_before_the_upstream_finishes_it(
    two_upstreams: tuple[str, str],
) -> None:
    with Balancer(two_upstreams[:1]) as balancer:
        async with httpx.AsyncClient(base_url=balancer.url) as http, http.stream("GET", "/events") as response:
            lines = response.aiter_lines()
            with anyio.fail_after(5):  # a buffering proxy would wait for the end, which never comes
                assert await anext(lines) == "data: first"
            await http.post("/release")
            with anyio.fail_after(5):
                rest = [line async for line in lines if line]
    assert rest == ["data: second"]


def test_an_upstream_that_refuses_connections_is_skipped(two_upstreams: tuple[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with Balancer([dead, two_upstreams[0]]) as balancer, httpx.Client(base_url=balancer.url) as http:
        served = [http.get("/whoami").text for _ in range(4)]
        stats = balancer.stats()
    assert served == ["A"] * 4
    assert stats == {dead: 0, two_upstreams[0]: 4}


@contextmanager
def dropping() -> Iterator[str]:
    """An upstream that reads a request and closes the connection without a word, as a worker shutting down
    does with a kept-alive connection the balancer then sends on; yields its base URL."""

    class Drop(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65_536)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Drop) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(10)


def test_a_request_an_upstream_dropped_without_answering_goes_to_the_next(two_upstreams: tuple[str, str]) -> None:
    a = two_upstreams[0]
    with dropping() as gone, Balancer([gone, a]) as balancer, httpx.Client(base_url=balancer.url) as http:
        served = [http.get("/whoami").text for _ in range(2)]
        echoed = [http.post("/echo", content=b"a body, sent again").content for _ in range(2)]
        stats = balancer.stats()
    assert served == ["A", "A"]
    assert echoed == [b"a body, sent again"] * 2, "the body is sent whole to the next upstream"
    assert stats == {gone: 0, a: 4}


def test_no_upstream_answering_is_a_502() -> None:
    dead = [f"http://127.0.0.1:{port}" for port in free_ports(2)]
    with Balancer(dead) as balancer:
        response = httpx.get(balancer.url + "/whoami")
    assert response.status_code == 502
