"""A hop between real uvicorn workers changes nothing the application can see (issue 20, findings 5-9).

Two hosts (`uvicorn --workers 1` on 127.0.0.4 and 127.0.0.5, continuity over TCP) serving
`fidelity_app`, whose tool reports what it sees of the request. A client from 127.0.0.9 opens a
session on one host and calls it through the other.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.env import ENV_CONTINUITY, ENV_FORWARD_LISTEN, ENV_HASH_KEY, ENV_WORKER_ID
from mcp_registry.testing import initialize_request, session_headers, tool_call

pytestmark = pytest.mark.integration

APP_DIR: Final = str(Path(__file__).resolve().parent)
KEY: Final = "x0V5ZPG3fLq2mN8dTkR7aYwB4cHsJe6uQ1iOgWnElAU"
CLIENT: Final = "127.0.0.9"
WINDOW: Final = 4096
"""The owner's anti-replay window (`hop_auth.WINDOW`): a hop signed before that many later ones was refused."""


@contextlib.contextmanager
def two_hosts(*uvicorn_args: str) -> Iterator[tuple[UvicornHost, UvicornHost]]:
    with contextlib.ExitStack() as stack:
        hosts = tuple(
            stack.enter_context(UvicornHost(
                address, workers=1, app="fidelity_app:app", uvicorn_args=["--app-dir", APP_DIR, *uvicorn_args],
                env={ENV_CONTINUITY: "forward", ENV_HASH_KEY: KEY, ENV_FORWARD_LISTEN: f"{address}:0",
                     ENV_WORKER_ID: name},
            ))
            for address, name in (("127.0.0.4", "owner"), ("127.0.0.5", "other"))
        )  # fmt: skip
        yield hosts[0], hosts[1]


def client() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=10)


def open_session(http: httpx.Client, url: str) -> str:
    response = http.post(url, json=initialize_request(), headers=session_headers(None))
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def seen(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["result"]["content"][0]["text"])  # type: ignore[no-any-return]


def test_the_owner_sees_the_client_s_address_scheme_state_and_header_bytes() -> None:
    with two_hosts() as (owner, other), client() as http:
        session_id = open_session(http, f"{owner.url}/mcp")
        headers = [(k.encode(), v.encode()) for k, v in session_headers(session_id).items()]
        headers.append((b"x-label", "caf\u00e9".encode("latin-1")))

        direct = seen(http.post(f"{owner.url}/mcp", json=tool_call("seen", {}), headers=headers))
        hopped = seen(http.post(f"{other.url}/mcp", json=tool_call("seen", {}), headers=headers))

    assert direct == {"worker": "owner", "client": CLIENT, "scheme": "http", "root_path": "",
                      "pool": "pool-of-owner", "label": ["636166e9"]}  # fmt: skip
    assert hopped == direct, "a request is the same request on its owner whether or not it hopped"


def test_root_path_keeps_continuity_on_and_routes_on_the_owner() -> None:
    """Finding 6: `--root-path /api` turned the middleware off (paths found in the routes did not match).

    As behind a proxy that serves the app under /api and strips the prefix: uvicorn gets /mcp and puts
    /api in front of the path it gives the app."""
    with two_hosts("--root-path", "/api") as (owner, other), client() as http:
        session_id = open_session(http, f"{owner.url}/mcp")

        hopped = seen(http.post(f"{other.url}/mcp", json=tool_call("seen", {}), headers=session_headers(session_id)))

    assert hopped["worker"] == "owner"
    assert hopped["root_path"] == "/api"


def test_a_chunked_initialize_with_a_dead_owner_s_id_opens_a_fresh_session() -> None:
    """Finding 8: the first chunk of a streamed body was lost when the owner was gone (404, not a session)."""
    with two_hosts() as (owner, other), client() as http:
        stale = open_session(http, f"{owner.url}/mcp")
        owner.stop()
        # 1 MB of JSON white space: the server hands the body to the app in many pieces, as a slow network would.
        body = json.dumps(initialize_request()).encode().replace(b",", b"," + b" " * 1_000_000, 1)

        def in_two_pieces() -> Iterator[bytes]:
            yield body[:20]
            yield body[20:]

        response = http.post(f"{other.url}/mcp", content=in_two_pieces(), headers=session_headers(stale))

    assert response.status_code == 200, response.text
    assert response.headers["mcp-session-id"] not in ("", stale)


def test_a_slow_upload_across_a_hop_is_served() -> None:
    """Finding 9: a hop was signed before its body came, so one whose body came after the owner had accepted
    4 096 later hops from that worker (or after 30 s) was refused (502)."""
    with two_hosts() as (owner, other), client() as http:
        session_id = open_session(http, f"{owner.url}/mcp")
        go = threading.Event()
        answer: list[httpx.Response] = []

        def slow_body() -> Iterator[bytes]:
            if not go.wait(timeout=120):
                return
            yield json.dumps(tool_call("seen", {})).encode()

        def upload() -> None:
            with client() as slow:
                answer.append(slow.post(f"{other.url}/mcp", content=slow_body(), headers=session_headers(session_id)))

        uploading = threading.Thread(target=upload)
        uploading.start()
        try:
            call = tool_call("seen", {})
            for _ in range(WINDOW + 10):  # bounded: later hops from the same worker, while the upload waits
                assert http.post(f"{other.url}/mcp", json=call, headers=session_headers(session_id)).status_code == 200
        finally:
            go.set()
            uploading.join(timeout=60)

    assert [seen(r)["worker"] for r in answer] == ["owner"]
