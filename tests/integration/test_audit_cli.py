"""The real `mcp-registry audit` console script against a real `redis-server`.

One test drives known traffic through two real workers of the demo app (created on worker-0,
reused on worker-1, a fabricated id, a malformed id, a DELETE) and reads it back with
`audit --json`; the others seed the registry through the key schema and check the human
output and every bad-input path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis

from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.registry import key_schema

pytestmark = pytest.mark.integration

CLI: Final = Path(sys.executable).with_name("mcp-registry")
PREFIX: Final = "itest"
LEGACY_VERSION: Final = "2025-06-18"
MCP_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def audit_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `mcp-registry audit ARGS` (bounded); the environment names no registry by default."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    return subprocess.run(
        [str(CLI), "audit", *args],
        env={**base, "COLUMNS": "160", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def audit_json(url: str, *extra: str) -> dict[str, Any]:
    done = audit_cli("--json", "--url", url, "--prefix", PREFIX, *extra)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def poll(
    read: Callable[[], dict[str, Any]], ready: Callable[[dict[str, Any]], bool], *, bound: float
) -> dict[str, Any]:
    """Read until `ready` holds, at most `bound` seconds; return the last reading."""
    deadline = time.monotonic() + bound
    while True:
        doc = read()
        if ready(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)  # between polls of a bounded loop, not a wait for something to happen


@pytest.fixture
def seeded(redis_server: RedisServer) -> RedisServer:
    """Two minutes of traffic between workers A, B and C, written through the key schema."""
    schema = key_schema.KeySchema(PREFIX)
    now = time.time()
    minute = key_schema.minute_of(now)
    with redis.Redis.from_url(redis_server.url) as r:
        for at, counts in {
            minute - 3: {
                key_schema.f_created("A"): 4,
                key_schema.f_reuse("A", "B"): 6,
                key_schema.f_lookup("cross_worker", "reject"): 6,
            },
            minute: {
                key_schema.f_created("B"): 2,
                key_schema.f_ended("A", "deleted"): 3,
                key_schema.f_reuse("B", "C"): 1,
                key_schema.f_lookup("cross_worker", "strip"): 1,
                key_schema.f_lookup("fabricated", "reject"): 5,
                key_schema.f_lookup("malformed", "reject"): 2,
                key_schema.f_client("claude-code", "1.0"): 6,
            },
        }.items():
            for field, n in counts.items():
                r.hincrby(schema.minute(at), field, n)
        r.zadd(schema.workers, {"A": now, "B": now})
        r.hset(schema.worker("A"), mapping={"live": 1})
        r.hset(schema.worker("B"), mapping={"live": 2})
    return redis_server


def test_json_reports_the_seeded_counts(seeded: RedisServer) -> None:
    doc = audit_json(seeded.url, "--since", "10m")

    assert doc["window_seconds"] == 600
    assert {k: doc["sessions"][k] for k in ("created", "ended", "live")} == {"created": 6, "ended": 3, "live": 3}
    assert doc["lookups"] == {
        "local": 0, "cross_worker": 7, "expired": 0, "fabricated": 5, "malformed": 2, "unverified": 0, "missing": 0,
    }  # fmt: skip
    assert doc["cross_worker_reuse"] == [
        {"origin": "A", "serving": "B", "count": 6},
        {"origin": "B", "serving": "C", "count": 1},
    ]
    assert doc["workers"] == ["A", "B", "C"]


def test_a_shorter_window_leaves_older_minutes_out(seeded: RedisServer) -> None:
    doc = audit_json(seeded.url, "--since", "30s")
    assert doc["sessions"]["created"] == 2
    assert doc["cross_worker_reuse"] == [{"origin": "B", "serving": "C", "count": 1}]


def test_human_output_contains_the_reuse_matrix(seeded: RedisServer) -> None:
    done = audit_cli(env={"MCP_SESSION_REGISTRY_URL": seeded.url, "MCP_SESSION_REGISTRY_PREFIX": PREFIX})
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Cross-worker reuse (origin → serving)" in text
    matrix = text[text.index("Cross-worker reuse") :].splitlines()
    rows = {cells[0]: cells[1:] for line in matrix if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4}
    assert rows["A"] == ["6", "·", "6"]
    assert rows["B"] == ["·", "1", "1"]
    assert "claude-code" in text


def test_python_dash_m_runs_the_same_command(seeded: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--json", "--url", seeded.url, "--prefix", PREFIX],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sessions"]["created"] == 6


def test_the_audit_writes_nothing(seeded: RedisServer) -> None:
    with redis.Redis.from_url(seeded.url) as r:
        before = {k: r.dump(k) for k in r.scan_iter(f"{PREFIX}:*")}
        audit_json(seeded.url)
        after = {k: r.dump(k) for k in r.scan_iter(f"{PREFIX}:*")}
        assert r.info("stats")["total_commands_processed"] > 0
    assert after == before


# --- bad input -----------------------------------------------------------------------------
def assert_one_line_failure(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr


def test_an_unreachable_redis_fails_fast_in_one_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = audit_cli("--url", f"redis://127.0.0.1:{port}/0")
    assert time.monotonic() - started < 15
    assert_one_line_failure(done, f"cannot read the registry at redis://127.0.0.1:{port}/0")


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "garbage", "redis://127.0.0.1:notaport/0"])
def test_a_wrong_url_fails_in_one_line(url: str) -> None:
    assert_one_line_failure(audit_cli("--url", url), "invalid Redis URL")


def test_an_empty_registry_fails_in_one_line(redis_server: RedisServer) -> None:
    assert_one_line_failure(audit_cli("--url", redis_server.url), "no registry data in the last 1h")


@pytest.mark.parametrize("since", ["soon", "-5m", "0", "1h30m"])
def test_a_bad_since_fails_in_one_line(since: str) -> None:
    assert_one_line_failure(audit_cli(f"--since={since}"), "invalid duration")


# --- real traffic --------------------------------------------------------------------------
def post(client: httpx.Client, url: str, body: dict[str, Any], session: str | None = None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if session is not None:
        headers |= {"mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION}
    return client.post(url + "/mcp", json=body, headers=headers)


def test_json_counts_exactly_the_traffic_two_real_workers_saw(
    redis_server: RedisServer, worker_cluster: Callable[..., WorkerCluster]
) -> None:
    cluster = worker_cluster(
        2,
        env={
            "MCP_SESSION_REGISTRY": "1",
            "MCP_SESSION_REGISTRY_URL": redis_server.url,
            "MCP_SESSION_REGISTRY_PREFIX": PREFIX,
            "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "1",
        },
    )
    a, b = cluster.urls
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    with httpx.Client(timeout=10) as client:
        init = post(client, a, {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {},
                       "clientInfo": {"name": "audit-itest", "version": "9.9"}},
        })  # fmt: skip
        assert init.status_code == 200, init.text
        session = init.headers["mcp-session-id"]
        notified = post(client, a, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        assert notified.status_code == 202
        # worker-0 records the session in the background: wait until the registry has it.
        created = poll(lambda: audit_json(redis_server.url), lambda d: d["sessions"]["created"] == 1, bound=20)
        assert created["sessions"]["created"] == 1

        assert post(client, b, call, session).status_code == 404  # worker-1 never issued it
        assert post(client, a, call, "made-up-0123456789abcdef").status_code == 404
        assert post(client, b, call, "has spaces, not an id").status_code == 404
        assert post(client, a, call).status_code == 400  # no id at all: a gateway dropped it (missing)
        deleted = client.delete(a + "/mcp", headers={**MCP_HEADERS, "mcp-session-id": session,
                                                     "mcp-protocol-version": LEGACY_VERSION})  # fmt: skip
        assert deleted.status_code == 200

    def settled(doc: dict[str, Any]) -> bool:
        lookups = doc["lookups"]
        return bool(doc["sessions"]["ended"] == 1 and lookups["cross_worker"] + lookups["unverified"] >= 1
                    and lookups["fabricated"] + lookups["unverified"] >= 1 and lookups["malformed"] == 1
                    and lookups["missing"] == 1)  # fmt: skip

    doc = poll(lambda: audit_json(redis_server.url), settled, bound=20)
    sessions = doc["sessions"]
    assert (sessions["created"], sessions["ended"], sessions["live"]) == (1, 1, 0)
    assert sessions["ended_by_reason"]["deleted"] == 1
    assert {k: doc["lookups"][k] for k in ("cross_worker", "fabricated", "malformed", "unverified", "missing")} == {
        "cross_worker": 1, "fabricated": 1, "malformed": 1, "unverified": 0, "missing": 1,
    }  # fmt: skip
    assert doc["lookup_actions"]["reject"] == 3
    assert doc["cross_worker_reuse"] == [{"origin": "worker-0", "serving": "worker-1", "count": 1}]
    assert doc["workers"] == ["worker-0", "worker-1"]
    assert [(c["name"], c["version"], c["created"]) for c in doc["clients"]] == [("audit-itest", "9.9", 1)]
    assert doc["lifetime_seconds"]["count"] == 1
    assert doc["protocol_eras"]["modern"] == 0
