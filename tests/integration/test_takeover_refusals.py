"""What takeover never does, with real hosts: bring back an ended or altered id, adopt twice, adopt for
a stranger.

Three hosts (`uvicorn --workers 2` on 127.0.0.2, .3 and .4, `MCP_SESSION_CONTINUITY=adopt`) of an app
behind bearer tokens (`bearer_app.py`), one real redis-server. Sessions are opened on the first host,
which is then SIGKILLed (no handover: the others find its listener gone); the requests that follow go
to the other two hosts, as a balancer would send them. Each test has a control: a session that may be
adopted is, in the same deployment, so that a refusal is the rule at work and not a broken setup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
import redis

from mcp_registry.audit.run import read_report
from mcp_registry.demo._process import kill
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.redis_cluster import wait_until
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import (
    ENV_CONTINUITY,
    ENV_FORWARD_LISTEN,
    ENV_HASH_KEY,
    ENV_PREFIX,
    ENV_REFRESH_SECONDS,
    ENV_REGISTRY,
    ENV_URL,
)
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.key_schema import KeySchema, parse_takeover
from mcp_registry.registry.report import Takeover
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.integration.bearer_app import ENV_HOST

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
APP: Final = "tests.integration.bearer_app:build_app"
KEY: Final = "R2kWq9ZtXb4nLc7vJp0sHd3fGm6aYe1uTi8oKwNeQyB"
PREFIX: Final = "refusals"
ADDRESSES: Final = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
ALICE: Final = "alice-token"
BOB: Final = "bob-token"


class Deployment:
    """The three hosts; `owner` is the one sessions are opened on (and which is killed)."""

    def __init__(self, hosts: list[UvicornHost], redis_url: str) -> None:
        self.hosts = hosts
        self.redis_url = redis_url
        self.owner, self.others = hosts[0], hosts[1:]
        self._hasher = IdHasher(KEY.encode())
        self._keys = KeySchema(PREFIX)

    def open(self, token: str = ALICE) -> str:
        """A session opened on the owner host (initialize and initialized), as the official clients do."""
        headers = {**session_headers(None), "authorization": f"Bearer {token}"}
        response = httpx.post(f"{self.owner.url}/mcp", json=initialize_request("refusals", "1.0"), headers=headers)
        assert response.status_code == 200, response.text
        session_id = response.headers["mcp-session-id"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        sent = httpx.post(f"{self.owner.url}/mcp", json=initialized, headers=with_token(token, session_id))
        assert sent.status_code == 202, sent.text
        return session_id

    def wait_stored(self, session_id: str) -> None:
        """Until the session's live key holds its handshake (written in the background)."""
        key = self._keys.session(self._hasher.require(session_id))
        with redis.Redis.from_url(self.redis_url, decode_responses=True) as r:
            wait_until(lambda: r.get(key), lambda v: isinstance(v, str) and parse_takeover(v) is not None,
                       bound=10, what="the session's handshake in Redis")  # fmt: skip

    def wait_ended(self, session_id: str) -> None:
        key = self._keys.tombstone(self._hasher.require(session_id))
        with redis.Redis.from_url(self.redis_url) as r:
            wait_until(lambda: r.exists(key), bool, bound=10, what="the session's tombstone in Redis")

    def kill_owner(self) -> None:
        """SIGKILL the owner host's process group: no handover, no tombstone."""
        assert self.owner._proc is not None
        kill(self.owner._proc)
        self.owner.stop()

    def audit(self, adopted: int, **failed: int) -> Takeover:
        """The audit's takeover counts once the surviving workers have flushed at least `adopted` adoptions
        and the `failed` failures by reason (each worker flushes its counts every refresh)."""

        def flushed(t: Takeover) -> bool:
            failures = dict(t.failed)
            return sum(n for _, n in t.adopted) >= adopted and all(failures.get(k, 0) >= n for k, n in failed.items())

        return wait_until(lambda: read_report(self.redis_url, prefix=PREFIX, since=600).takeover, flushed,
                          bound=15, what="the audit to count the takeovers")  # fmt: skip


def with_token(token: str, session_id: str | None) -> dict[str, str]:
    return {**session_headers(session_id), "authorization": f"Bearer {token}"}


def whoami(host: UvicornHost, session_id: str, token: str = ALICE, request_id: int = 2) -> httpx.Response:
    return httpx.post(f"{host.url}/mcp", json=tool_call("whoami", {}, request_id=request_id),
                      headers=with_token(token, session_id), timeout=10)  # fmt: skip


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, (response.status_code, response.text)
    return str(response.json()["result"]["content"][0]["text"])


@pytest.fixture
def deployment(redis_server: RedisServer) -> Iterator[Deployment]:
    def env(index: int, address: str) -> dict[str, str]:
        return {
            ENV_CONTINUITY: "adopt", ENV_HASH_KEY: KEY, ENV_FORWARD_LISTEN: f"{address}:0", ENV_REGISTRY: "1",
            ENV_URL: redis_server.url, ENV_PREFIX: PREFIX, ENV_REFRESH_SECONDS: "2", ENV_HOST: f"host-{index}",
        }  # fmt: skip

    with contextlib.ExitStack() as stack:
        args = ["--factory", "--app-dir", str(ROOT)]
        hosts = [
            stack.enter_context(UvicornHost(address, workers=2, app=APP, env=env(index, address), uvicorn_args=args))
            for index, address in enumerate(ADDRESSES)
        ]
        yield Deployment(hosts, redis_server.url)


@pytest.mark.timeout(120)
def test_an_ended_or_altered_id_is_never_brought_back_after_its_owner_dies(deployment: Deployment) -> None:
    ended, kept, other = deployment.open(), deployment.open(), deployment.open()
    sdk_id, label, seal = other.split(".")
    altered = f"{sdk_id}.{label}.{seal[:-4]}{'BBBB' if seal.endswith('AAAA') else 'AAAA'}"
    closed = httpx.delete(f"{deployment.owner.url}/mcp", headers=with_token(ALICE, ended))
    assert closed.status_code == 200
    for session_id in (kept, other):
        deployment.wait_stored(session_id)
    deployment.wait_ended(ended)
    deployment.kill_owner()
    b, c = deployment.others

    after_delete = [whoami(host, ended) for host in (b, c)]
    after_altering = [whoami(host, altered) for host in (b, c)]
    control = served_by(whoami(b, kept))

    assert [r.status_code for r in after_delete] == [404, 404], "the client ended it: it stays ended"
    assert [r.status_code for r in after_altering] == [404, 404], "an altered id is fabricated: never adopted"
    assert control.startswith("host-1"), "a live session of the same owner is adopted"
    assert served_by(whoami(c, other)).startswith("host-"), "the altered copy did not spoil the real id"
    takeover = deployment.audit(adopted=2, ended=1)
    assert sum(n for _, n in takeover.adopted) == 2, takeover


@pytest.mark.timeout(120)
def test_two_hosts_adopting_one_session_at_once_make_one_owner(deployment: Deployment) -> None:
    session_id = deployment.open()
    deployment.wait_stored(session_id)
    deployment.kill_owner()
    b, c = deployment.others
    answers: list[httpx.Response] = []

    async def at_once() -> None:
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            for request_id, host in enumerate((b, c) * 4, start=10):  # 8 requests: both hosts, all their workers
                tg.start_soon(send, client, host, request_id)

    async def send(client: httpx.AsyncClient, host: UvicornHost, request_id: int) -> None:
        body: dict[str, Any] = tool_call("whoami", {}, request_id=request_id)
        answers.append(await client.post(f"{host.url}/mcp", json=body, headers=with_token(ALICE, session_id)))

    anyio.run(at_once)
    owners = {served_by(r) for r in answers}
    later = {served_by(whoami(host, session_id, request_id=n)) for n, host in enumerate((b, c, b, c), start=30)}

    assert len(answers) == 8
    assert len(owners) == 1, f"one session, one owner: {owners}"
    assert later == owners, "and it stays the owner, from either host"
    takeover = deployment.audit(adopted=1)
    assert sum(n for _, n in takeover.adopted) == 1, f"adopted once: {takeover}"


@pytest.mark.timeout(120)
def test_only_the_principal_that_opened_a_session_can_adopt_it(deployment: Deployment) -> None:
    alices = deployment.open(ALICE)
    deployment.wait_stored(alices)
    deployment.kill_owner()
    b, c = deployment.others

    as_bob = [whoami(host, alices, BOB) for host in (b, c)]
    as_alice = whoami(b, alices, ALICE)
    bob_again = whoami(c, alices, BOB)

    assert [r.status_code for r in as_bob] == [404, 404], "as the SDK's own credential binding answers"
    assert served_by(as_alice).startswith("host-1")
    assert bob_again.status_code == 404, "forwarded to the adopter, whose SDK holds the opener's binding"
    takeover = deployment.audit(adopted=1, principal_mismatch=2)
    assert sum(n for _, n in takeover.adopted) == 1, takeover
