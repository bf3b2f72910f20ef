"""Raw session ids are bearer secrets: no output channel may carry one by default.

Real workers of the demo app log at DEBUG (the SDK logs every session id it creates, rejects or
ends, and mcp_registry redacts those lines), export every span over OTLP to a receiver in this
test (`MCP_SESSION_REGISTRY_TRACE_LOCAL=1`: own-session requests get a span too) and serve
Prometheus metrics. Traffic uses ids the test knows: sessions it opened, ids it made up (some
with `:` or spaces, which the SDK logs as they are), hops between the workers, DELETEs. Then
every channel is searched for every id: both workers' logs, every span attribute, both metrics
endpoints, every Redis key and value (SCAN), and the audit's JSON and human output.

The keyed hash: one key, agreed through Redis by the first worker (or given by the operator, and
then never written to Redis), gives the same `id_hash` for the same id on every worker; a worker
that cannot reach Redis has no key and puts no `id_hash` on its spans rather than invent one.
The audit only reads: Redis counts no write command during an audit run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis

from mcp_registry.demo import _process
from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer, redis_server_on_path
from mcp_registry.demo.telemetry_setup import ENV_PROMETHEUS_PORT
from mcp_registry.env import ENV_HASH_KEY, ENV_RECORD_RAW_ID, ENV_REFRESH_SECONDS, ENV_TRACE_LOCAL
from mcp_registry.registry import hasher
from mcp_registry.telemetry import ATTR_ID_HASH, ATTR_RAW_SESSION_ID, ATTR_STATUS, SPAN_RESOLVE
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.conftest import require
from tests.integration.test_faults import (
    PREFIX,
    RECOVERY_BOUND,
    REFRESH_SECONDS,
    SCHEMA,
    UNAVAILABLE,
    StartCluster,
    poll,
    registry_env,
    start_workers,
    wait_for_log,
)
from tests.integration.test_otlp_spans import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

LOG_CONFIG: Final = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "root": {"level": "DEBUG", "handlers": ["stderr"]},
}
"""Every logger at DEBUG (the SDK's own `configure_logging` then leaves the root logger alone)."""


@pytest.fixture
def debug_logging(tmp_path: Path) -> list[str]:
    """uvicorn arguments that put every logger of a worker at DEBUG."""
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(LOG_CONFIG))
    return ["--log-config", str(path)]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def resolve_spans(receiver: OtlpReceiver, worker: str | None = None) -> list[ReceivedSpan]:
    return [
        s for s in receiver.received()
        if s.name == SPAN_RESOLVE and (worker is None or s.resource.get("service.instance.id") == worker)
    ]  # fmt: skip


def redis_dump(url: str) -> dict[str, str]:
    """Every key in Redis and its value, as text."""
    dump: dict[str, str] = {}
    with redis.Redis.from_url(url, decode_responses=True) as r:
        for key in r.scan_iter(count=1000):
            kind = r.type(key)
            value: Any
            if kind == "string":
                value = r.get(key)
            elif kind == "hash":
                value = r.hgetall(key)
            elif kind == "zset":
                value = r.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                value = sorted(r.smembers(key))
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            else:
                value = f"<{kind}>"
            dump[key] = json.dumps(value)
    return dump


def audit_output(url: str, *args: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--url", url, "--prefix", PREFIX, "--since", "15m", *args],
        env={**base, ENV_REFRESH_SECONDS: str(REFRESH_SECONDS), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@dataclass
class KnownIds:
    """Every id the traffic used, and the distinctive parts that would show a partial leak."""

    opened: dict[str, int]
    """Sessions opened: id -> worker index."""
    made_up: list[str]
    fragments: list[str]
    """Random tokens inside made-up and malformed ids (a leak of part of an id shows up as one)."""

    @property
    def secrets(self) -> list[str]:
        return [*self.opened, *self.made_up, *self.fragments]


def drive_known_traffic(urls: list[str]) -> KnownIds:
    tokens = [secrets.token_hex(12) for _ in range(6)]
    made_up = [
        f"made-up-{tokens[0]}",
        f"tenant:{tokens[1]}:session",  # visible ASCII, so a valid id; the SDK logs it on a 404
        f"with spaces {tokens[2]} {tokens[3]}",  # malformed
        f"{tokens[4]}:{tokens[5]}",
    ]
    opened: dict[str, int] = {}
    call = tool_call("add", {"a": 1, "b": 2})
    with httpx.Client(timeout=10) as http:
        for index, url in enumerate(urls):
            for _ in range(2):
                response = http.post(url + "/mcp", json=initialize_request("secrets"), headers=session_headers(None))
                assert response.status_code == 200
                opened[response.headers["mcp-session-id"]] = index
        for session_id, index in opened.items():
            own, other = urls[index], urls[(index + 1) % len(urls)]
            assert http.post(own + "/mcp", json=call, headers=session_headers(session_id)).status_code == 200
            assert http.post(other + "/mcp", json=call, headers=session_headers(session_id)).status_code == 404
            assert http.get(other + "/mcp", headers=session_headers(session_id)).status_code == 404
            assert http.delete(other + "/mcp", headers=session_headers(session_id)).status_code == 200
        for fake in made_up:
            for url in urls:
                assert http.post(url + "/mcp", json=call, headers=session_headers(fake)).status_code == 404
                assert http.delete(url + "/mcp", headers=session_headers(fake)).status_code == 200
                reopened = http.post(url + "/mcp", json=initialize_request("again"), headers=session_headers(fake))
                assert reopened.status_code == 200  # initialize with a stale id: a fresh session
                opened[reopened.headers["mcp-session-id"]] = urls.index(url)
        first = next(iter(opened))
        assert http.delete(urls[opened[first]] + "/mcp", headers=session_headers(first)).status_code == 200
    return KnownIds(opened, made_up, tokens)


def leaks(secrets: list[str], channels: dict[str, str]) -> list[str]:
    return [f"{secret!r} in {name}" for name, text in channels.items() for secret in secrets if secret in text]


def write_commands_during(url: str, action: Callable[[], object]) -> dict[str, int]:
    """The commands flagged `write` by Redis itself (COMMAND) that ran while `action` ran, with counts."""
    with redis.Redis.from_url(url, decode_responses=True) as r:
        flags = {name: set(spec["flags"]) for name, spec in r.command().items()}
        before = r.info("commandstats")
        action()
        after = r.info("commandstats")
    ran = {
        name.removeprefix("cmdstat_"): int(stats["calls"]) - int(before.get(name, {}).get("calls", 0))
        for name, stats in after.items()
    }
    return {name: n for name, n in ran.items() if n > 0 and "write" in flags.get(name.split("|")[0], set())}


# --- every channel, default settings -------------------------------------------------------------
@dataclass
class Observed:
    """What every output channel of two real workers carried after known traffic."""

    known: KnownIds
    logs: dict[str, str]
    others: dict[str, str]
    """Spans, metrics, Redis and the audit, as text, by channel."""
    statuses: set[object]
    """`mcp_registry.session.status` of the resolve spans received."""
    redis_keys: set[str]
    tombstones: set[str]
    """The tombstone keys the held sessions should have after the graceful shutdown."""


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Known traffic through two workers logging at DEBUG and exporting spans; every channel read.

    Module-scoped (one run serves the tests below), so it starts its own Redis and workers.
    """
    require(redis_server_on_path() is not None, "redis-server (on PATH)")
    log_config = tmp_path_factory.mktemp("logging") / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    with RedisServer(embedded=False) as server, OtlpReceiver() as receiver:
        env = registry_env(server.url, **tracing_env(receiver), **{ENV_TRACE_LOCAL: "1"})
        ports = _process.free_ports(2)
        cluster = WorkerCluster(
            2, env=env, worker_env=lambda i: {ENV_PROMETHEUS_PORT: str(ports[i])},
            uvicorn_args=["--log-config", str(log_config)],
        )  # fmt: skip
        with cluster:
            known = drive_known_traffic(cluster.urls)
            held = [sid for sid in known.opened if sid != next(iter(known.opened))]
            poll(lambda: len(resolve_spans(receiver)), lambda n: n >= len(known.opened) * 2, bound=RECOVERY_BOUND)
            with redis.Redis.from_url(server.url, decode_responses=True) as r:
                hash_key = poll(lambda: r.get(SCHEMA.hash_key), lambda k: k is not None, bound=RECOVERY_BOUND)
                assert hash_key is not None
                hashes = [hasher.id_hash(hash_key.encode(), sid) for sid in held]
                live = {SCHEMA.session(h) for h in hashes}
                recorded = poll(lambda: set(r.scan_iter(f"{PREFIX}:s:*")), lambda f: f >= live, bound=RECOVERY_BOUND)
                assert recorded >= live
            metrics = {f"metrics of worker-{i}": httpx.get(f"http://127.0.0.1:{p}/metrics").text
                       for i, p in enumerate(ports)}  # fmt: skip
            for index in range(2):
                cluster.terminate(index)  # graceful: the SDK logs the sessions it ends too
            logs = {f"log of worker-{i}": cluster.log(i) for i in range(2)}
        spans = receiver.received()
        dump = redis_dump(server.url)
        yield Observed(
            known=known,
            logs=logs,
            others={
                **metrics,
                "spans": json.dumps([[s.name, s.attributes, s.resource] for s in spans], default=str),
                "redis": json.dumps(dump),
                "audit --json": audit_output(server.url, "--json"),
                "audit": audit_output(server.url),
            },
            statuses={s.attributes.get(ATTR_STATUS) for s in spans if s.name == SPAN_RESOLVE},
            redis_keys=set(dump),
            tombstones={SCHEMA.tombstone(h) for h in hashes},
        )


def test_no_raw_id_reaches_spans_metrics_redis_or_the_audit(observed: Observed) -> None:
    found = leaks(observed.known.secrets, observed.others)
    assert found == [], "\n".join(found)
    # ... and they did carry the traffic: every classification, every key.
    assert {"local", "cross_worker", "fabricated", "malformed"} <= observed.statuses
    assert observed.tombstones <= observed.redis_keys  # ended at shutdown, remembered by hash only


def test_keys_live_under_the_configured_prefix_only(observed: Observed) -> None:
    outside = sorted(key for key in observed.redis_keys if not key.startswith(f"{PREFIX}:"))
    assert outside == []


def test_the_sdks_log_lines_name_sessions_by_hash_only(observed: Observed) -> None:
    known = observed.known
    ordinary = [*known.opened, known.made_up[0]]  # the ids the SDK issues, and one like them
    found = leaks(ordinary, observed.logs)
    assert found == [], "\n".join(found)
    for log in observed.logs.values():
        assert "Created new transport with session ID: <id_hash:" in log
        assert "Rejected request with unknown or expired session ID: <id_hash:" in log
        assert "Terminating session: <id_hash:" in log
        assert "Traceback" not in log


def test_a_made_up_id_with_colons_or_spaces_is_redacted_whole_in_logs(observed: Observed) -> None:
    """The SDK logs a rejected id as the client sent it: a `:` or a space must not end the redaction
    (found by this test; fixed in 29dab05)."""
    found = leaks([*observed.known.made_up, *observed.known.fragments], observed.logs)
    assert found == [], "\n".join(found)


def test_one_agreed_key_gives_the_same_id_hash_on_every_worker(
    redis_server: RedisServer, worker_cluster: StartCluster, receiver: OtlpReceiver
) -> None:
    env = registry_env(redis_server.url, **tracing_env(receiver), **{ENV_TRACE_LOCAL: "1"})
    first = start_workers(worker_cluster, 1, env)
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        agreed = poll(lambda: r.get(SCHEMA.hash_key), lambda k: k is not None, bound=RECOVERY_BOUND)
        # A second cluster starts later (its worker-1 is the new worker): it adopts the stored key.
        later = start_workers(worker_cluster, 2, env)
        urls = [first.urls[0], later.urls[1]]
        session_id = next(iter(drive_known_traffic(urls).opened))
        assert r.get(SCHEMA.hash_key) == agreed, "the key was agreed twice"

    def hashes_of_session() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for span in receiver.received():
            worker = str(span.resource.get("service.instance.id"))
            if span.name == SPAN_RESOLVE and span.attributes.get(ATTR_STATUS) in ("local", "cross_worker"):
                found.setdefault(worker, set()).add(str(span.attributes.get(ATTR_ID_HASH)))
        return found

    assert agreed is not None
    wanted = hasher.id_hash(agreed.encode(), session_id)
    found = poll(hashes_of_session, lambda f: all(wanted in f.get(w, ()) for w in ("worker-0", "worker-1")),
                 bound=RECOVERY_BOUND)  # fmt: skip
    assert wanted in found["worker-0"]  # its own session (TRACE_LOCAL)
    assert wanted in found["worker-1"]  # the hop


def test_an_operator_key_is_used_and_never_written_to_redis(
    redis_server: RedisServer, worker_cluster: StartCluster, receiver: OtlpReceiver
) -> None:
    operator_key = secrets.token_urlsafe(32)
    env = registry_env(redis_server.url, **tracing_env(receiver), **{ENV_HASH_KEY: operator_key})
    workers = start_workers(worker_cluster, 2, env)
    known = drive_known_traffic(workers.urls)
    held = [sid for sid in known.opened if sid != next(iter(known.opened))]
    wanted = {SCHEMA.session(hasher.id_hash(operator_key.encode(), sid)) for sid in held}
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        found = poll(lambda: set(r.scan_iter(f"{PREFIX}:s:*")), lambda f: f >= wanted, bound=RECOVERY_BOUND)
    assert found >= wanted  # the sessions are recorded under the operator's key
    valid_made_up = [fake for fake in known.made_up if " " not in fake]
    wanted_hashes = {hasher.id_hash(operator_key.encode(), fake) for fake in valid_made_up}
    hashes = poll(lambda: {s.attributes.get(ATTR_ID_HASH) for s in resolve_spans(receiver)},
                  lambda h: h >= wanted_hashes, bound=RECOVERY_BOUND)  # fmt: skip
    assert hashes >= wanted_hashes
    dump = redis_dump(redis_server.url)
    assert SCHEMA.hash_key not in dump
    assert operator_key not in json.dumps(dump)


def test_a_worker_without_redis_invents_no_key(
    redis_server_on_path_required: None,
    worker_cluster: StartCluster,
    receiver: OtlpReceiver,
    debug_logging: list[str],
) -> None:
    server = RedisServer(embedded=False)  # not started yet
    try:
        env = registry_env(server.url, **tracing_env(receiver))
        workers = start_workers(worker_cluster, 1, env, uvicorn_args=debug_logging)
        wait_for_log(workers, UNAVAILABLE)
        made_up = f"made-up-{secrets.token_hex(12)}"
        call = tool_call("add", {"a": 1, "b": 2})
        response = httpx.post(workers.urls[0] + "/mcp", json=call, headers=session_headers(made_up), timeout=10)
        assert response.status_code == 404
        (span,) = poll(lambda: resolve_spans(receiver), lambda s: len(s) >= 1, bound=RECOVERY_BOUND)
        assert span.attributes[ATTR_STATUS] == "unverified"
        assert ATTR_ID_HASH not in span.attributes  # no key, no hash: never one of its own
        assert "Rejected request with unknown or expired session ID: <redacted>" in workers.cluster.log(0)

        server.start()
        with redis.Redis.from_url(server.url, decode_responses=True) as r:
            key = poll(lambda: r.get(SCHEMA.hash_key), lambda k: k is not None, bound=RECOVERY_BOUND)
        deadline = time.monotonic() + RECOVERY_BOUND
        while len(resolve_spans(receiver)) < 2 and time.monotonic() < deadline:
            httpx.post(workers.urls[0] + "/mcp", json=call, headers=session_headers(made_up), timeout=10)
            poll(lambda: resolve_spans(receiver), lambda s: len(s) >= 2, bound=1)
        later = resolve_spans(receiver)[1]
        assert key is not None
        assert later.attributes[ATTR_ID_HASH] == hasher.id_hash(key.encode(), made_up)
    finally:
        server.stop()


def test_the_raw_id_is_on_spans_only_when_the_operator_opts_in(
    redis_server: RedisServer, worker_cluster: StartCluster, receiver: OtlpReceiver
) -> None:
    env = registry_env(redis_server.url, **tracing_env(receiver), **{ENV_RECORD_RAW_ID: "1", ENV_TRACE_LOCAL: "1"})
    workers = start_workers(worker_cluster, 1, env)
    made_up = f"made-up-{secrets.token_hex(12)}"
    with httpx.Client(timeout=10) as http:
        opened = http.post(workers.urls[0] + "/mcp", json=initialize_request("raw"), headers=session_headers(None))
        own = opened.headers["mcp-session-id"]
        for session_id in (own, made_up):
            http.post(workers.urls[0] + "/mcp", json=tool_call("add", {"a": 1, "b": 2}),
                      headers=session_headers(session_id))  # fmt: skip
    spans = poll(lambda: resolve_spans(receiver), lambda s: len(s) >= 2, bound=RECOVERY_BOUND)
    assert {s.attributes.get(ATTR_RAW_SESSION_ID) for s in spans} == {own, made_up}


# --- the audit reads, never writes ---------------------------------------------------------------
def test_the_audit_runs_no_write_command(redis_server: RedisServer, worker_cluster: StartCluster) -> None:
    workers = start_workers(worker_cluster, 2, registry_env(redis_server.url))
    drive_known_traffic(workers.urls)
    for index in range(2):
        workers.cluster.terminate(index)  # nobody else writes while the audit runs
    before = redis_dump(redis_server.url)
    assert before

    def both_outputs() -> None:
        audit_output(redis_server.url, "--json")
        audit_output(redis_server.url)

    assert write_commands_during(redis_server.url, both_outputs) == {}
    assert redis_dump(redis_server.url) == before
