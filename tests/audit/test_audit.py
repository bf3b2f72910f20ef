"""`mcp-registry audit` without a server: argument handling, errors, the JSON document, the tables."""

from __future__ import annotations

import io
import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis
from rich.console import Console

from mcp_registry import cli
from mcp_registry.audit import run as audit
from mcp_registry.audit import tables
from mcp_registry.registry import key_schema

PREFIX = "mcpreg"
K = key_schema.KeySchema(PREFIX)
CLASSIFICATIONS = {"local", "cross_worker", "expired", "fabricated", "malformed", "unverified", "missing"}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """A fake Redis that `run_audit` connects to whatever the URL says."""
    fake = FakeServer()
    monkeypatch.setattr(audit, "connect", lambda config, **_: FakeRedis(server=fake, decode_responses=True))
    return fake


@pytest.fixture
def seeded(server: FakeServer) -> Iterator[FakeServer]:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    now = time.time()
    minute = K.minute(key_schema.minute_of(now))
    for field, n in {
        key_schema.f_created("worker-a"): 3,
        key_schema.f_ended("worker-a", "deleted"): 1,
        key_schema.f_reuse("worker-a", "worker-b"): 5,
        key_schema.f_reuse("worker-b", "worker-c"): 2,
        key_schema.f_lookup("cross_worker", "reject"): 7,
        key_schema.f_lookup("fabricated", "reject"): 4,
        key_schema.f_client("looper", "1.0"): 3,
        key_schema.f_requests("legacy"): 10,
    }.items():
        r.hincrby(minute, field, n)
    r.zadd(K.workers, {"worker-a": now - 1, "worker-b": now - 1})
    r.hset(K.worker("worker-a"), "live", 2)
    yield server
    r.close()


def run(console: Console, *, since: float | None = 3600, as_json: bool = False, url: str = "redis://x:6379/0") -> int:
    return audit.run_audit(url, prefix=PREFIX, since=since, as_json=as_json, console=console)


def recording_console() -> Console:
    return Console(record=True, width=160, file=io.StringIO())


# --- durations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("3600", 3600), ("1.5h", 5400), (" 2H ", 7200)],
)
def test_durations_accept_a_number_and_one_unit(text: str, seconds: float) -> None:
    assert audit.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5x", "-1m", "0", "0s", "1h30m", "91d", "nan", "inf", "1e3"])
def test_durations_refuse_anything_else(text: str) -> None:
    with pytest.raises(audit.AuditInputError, match="invalid duration"):
        audit.parse_duration(text)


def test_a_bad_since_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["audit", "--since", "soon"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mcp-registry audit: error: argument --since: invalid duration 'soon'")


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: mcp-registry" in capsys.readouterr().err


# --- failures --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost:6379", "invalid Redis URL 'http://localhost:6379'"),
        ("not a url", "invalid Redis URL"),
        ("redis://localhost:port/0", "the port is not a number"),
        ("redis://localhost:6379/zero", "the database must be a number"),
        ("redis://:hunter2@localhost:6379/zero", "redis://:***@localhost:6379/zero"),
    ],
)
def test_a_wrong_url_is_one_line_and_status_2(url: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(recording_console(), url=url) == audit.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err
    assert "hunter2" not in err


def test_the_url_comes_from_the_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_SESSION_REGISTRY_URL", "memcached://cache:11211")
    assert cli.main(["audit"]) == audit.EXIT_USAGE
    assert "memcached://cache:11211" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["", "a b", "{x}", "a|b"])
def test_a_bad_prefix_is_refused(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = audit.run_audit("redis://localhost/0", prefix=prefix, since=60, as_json=True, console=recording_console())
    assert status == audit.EXIT_USAGE
    assert "invalid prefix" in capsys.readouterr().err


def test_an_unreachable_redis_fails_fast_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    assert run(recording_console(), url=f"redis://127.0.0.1:{port}/0") == audit.EXIT_REDIS
    assert time.monotonic() - started < audit.REDIS_TIMEOUT_SECONDS + 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"mcp-registry audit: cannot read the registry at redis://127.0.0.1:{port}/0: ")


def test_an_empty_registry_says_so_in_one_line(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(recording_console(), since=900) == audit.EXIT_EMPTY
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert "no registry data in the last 15m" in err
    assert out == ""


# --- the JSON document -----------------------------------------------------------------------
def test_json_has_the_documented_keys_and_counts(seeded: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=None, width=100)
    assert audit.run_audit("redis://x/0", prefix=PREFIX, since=600, as_json=True, console=console) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)

    assert {"window_seconds", "sessions", "lookups", "cross_worker_reuse", "workers"} <= doc.keys()
    assert {"lifetime_seconds", "clients", "protocol_eras", "dropped_events", "timeline"} <= doc.keys()
    assert doc["window_seconds"] == 600
    assert {k: doc["sessions"][k] for k in ("created", "ended", "live")} == {"created": 3, "ended": 1, "live": 2}
    assert set(doc["lookups"]) == CLASSIFICATIONS
    assert (doc["lookups"]["cross_worker"], doc["lookups"]["fabricated"]) == (7, 4)
    assert doc["cross_worker_reuse"] == [
        {"origin": "worker-a", "serving": "worker-b", "count": 5},
        {"origin": "worker-b", "serving": "worker-c", "count": 2},
    ]
    assert doc["workers"] == ["worker-a", "worker-b", "worker-c"]
    assert doc["protocol_eras"]["legacy_share"] == 1.0
    assert len(doc["timeline"]) in (10, 11)  # minutes overlapping the last 600 s


# --- the tables ------------------------------------------------------------------------------
def cells(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in text.splitlines():
        row = [cell.strip() for cell in line.split("│")[1:-1]]
        if row and row[0] == first:
            return row
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_human_output_shows_the_reuse_matrix(seeded: FakeServer) -> None:
    console = recording_console()
    assert run(console) == 0
    text = console.export_text()

    matrix = text[text.index("Cross-worker reuse (origin → serving)") :]
    header = next(line for line in matrix.splitlines() if "origin ╲ serving" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["origin ╲ serving", "worker-b", "worker-c", "total"]
    assert cells(matrix, "worker-a") == ["worker-a", "5", "·", "5"]
    assert cells(matrix, "worker-b") == ["worker-b", "·", "2", "2"]


def test_human_output_has_totals_workers_lookups_and_clients(seeded: FakeServer) -> None:
    console = recording_console()
    assert run(console) == 0
    text = console.export_text()

    assert cells(text, "created")[:2] == ["created", "3"]
    assert cells(text, "live now")[:2] == ["live now", "2"]
    assert cells(text, "fabricated")[:3] == ["fabricated", "no", "4"]
    assert cells(text, "cross_worker")[:3] == ["cross_worker", "yes", "7"]
    worker_a = cells(text, "worker-a")  # the workers table comes first
    assert worker_a[:5] == ["worker-a", "alive", "2", "3", "1"]
    assert cells(text, "looper")[:3] == ["looper", "1.0", "3"]
    assert "redis://x:6379/0" in text


def test_a_window_without_reuse_says_so(server: FakeServer) -> None:
    minute = K.minute(key_schema.minute_of(time.time()))
    fakeredis.FakeRedis(server=server).hincrby(minute, key_schema.f_created("solo"), 1)
    console = recording_console()
    assert run(console) == 0
    assert "no cross-worker reuse in this window" in console.export_text()


def test_sparklines_scale_to_the_peak() -> None:
    line = tables.sparkline([0, 1, 2, 4, 8])
    assert line[0] == "▁"  # nothing
    assert line[1] != "▁"  # something, however small, is visible
    assert line[-1] == "█"  # the peak
    assert list(line) == sorted(line)
    assert tables.sparkline([0, 0, 0]) == "▁▁▁"
    assert tables.sparkline([5]) == "█"
    assert tables.sparkline([]) == ""


def test_sparkline_rows_are_one_character_per_minute_for_an_hour(seeded: FakeServer) -> None:
    console = recording_console()
    assert run(console) == 0
    text = console.export_text()
    row = cells(text[text.index("Per minute") :], "created")
    assert len(row[1]) == 61
    assert row[1][-1] == "█"
    assert set(row[1][:-1]) == {"▁"}


@pytest.mark.parametrize(("seconds", "text"), [(3600, "1h"), (90, "1m30s"), (5400, "1h30m"), (0, "0s"), (86_400, "1d")])
def test_durations_print_compactly(seconds: float, text: str) -> None:
    assert tables.format_duration(seconds) == text


def test_audit_works_when_the_demo_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mcp_registry.cli.demo", None)  # makes the import fail
    assert cli.main(["demo", "--duration", "5"]) == 1
    assert "mcp-registry demo: unavailable in this installation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["audit", "--since", "nope"])
    assert exit_info.value.code == 2


def test_an_invalid_registry_variable_is_one_line_and_status_2(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_SESSION_REGISTRY_REFRESH_SECONDS", "often")
    assert run(recording_console()) == audit.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "MCP_SESSION_REGISTRY_REFRESH_SECONDS" in err


@pytest.mark.parametrize(("refresh", "alive"), [(None, True), ("10", False)])
def test_liveness_follows_the_workers_refresh_interval(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, refresh: str | None, alive: bool
) -> None:
    r = fakeredis.FakeRedis(server=server)
    r.zadd(K.workers, {"quiet": time.time() - 100})  # silent for 100 s: within 3 x 60 s, beyond 3 x 10 s
    r.hset(K.worker("quiet"), "live", 4)
    if refresh is not None:
        monkeypatch.setenv("MCP_SESSION_REGISTRY_REFRESH_SECONDS", refresh)
    out = io.StringIO()
    assert run(Console(file=out), as_json=True) == 0
    doc = json.loads(out.getvalue())
    assert doc["sessions"]["per_worker"][0]["alive"] is alive
    assert doc["sessions"]["live"] == (4 if alive else 0)
    assert doc["sessions"]["ended_by_reason"]["worker_lost"] == (0 if alive else 4)


def test_the_worker_table_groups_a_host_and_folds_its_gone_workers(server: FakeServer) -> None:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    now = time.time()
    r.zadd(K.workers, {f"web-1:{pid}": now - 600 for pid in range(100, 120)})  # restarted 20 times
    r.zadd(K.workers, {"web-1:200": now - 1, "web-2:300": now - 1})
    r.hset(K.worker("web-1:200"), "live", 3)
    r.hincrby(K.minute(key_schema.minute_of(now)), key_schema.f_created("web-1:200"), 3)
    console = recording_console()
    assert run(console) == 0
    text = console.export_text()

    assert cells(text, "web-1")[:3] == ["web-1", "1 of 21 alive", "3"]
    assert cells(text, ":200")[:4] == [":200", "alive", "3", "3"]
    assert "+ 20 gone, no activity in the window" in text
    assert cells(text, "web-2:300")[:2] == ["web-2:300", "alive"]
    assert ":101" not in text
