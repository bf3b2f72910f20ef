"""`mcp-registry demo`, run as a user runs it: the real CLI in a child process."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("redis_server_on_path_required")]

MARKER = "MCP_REGISTRY_DEMO_TEST_RUN"


def cli() -> list[str]:
    script = Path(sys.executable).with_name("mcp-registry")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_registry.cli"]


def processes_carrying(token: str) -> list[int]:
    """Pids of live processes whose environment carries `MARKER=token`: the demo and the Python
    processes it started. (redis-server overwrites its environment with its process title: it is
    checked through its port.)"""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def redis_port(output: str) -> int:
    match = re.search(r"Redis: redis-server at redis://127\.0\.0\.1:(\d+)/0", output)
    assert match is not None, output
    return int(match[1])


def nothing_listens_on(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def start_demo(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    token = secrets.token_hex(8)
    env = {**os.environ, **(env or {}), MARKER: token, "COLUMNS": "120"}
    proc = subprocess.Popen([*cli(), "demo", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, token


@pytest.fixture(autouse=True)
def _needs_proc() -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding leftover processes reads /proc")


def test_the_demo_shows_sessions_break_without_continuity_and_not_with_it_nor_through_a_deploy() -> None:
    proc, token = start_demo("--duration", "8", "--workers", "2", "--clients", "2", "--json")
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    audit = json.loads(out)
    assert sum(row["count"] for row in audit["cross_worker_reuse"]) > 0
    assert set(audit["workers"]) >= {"worker-0", "worker-1"}
    assert audit["sessions"]["created"] > 0
    assert audit["forwarding"]["forwarded"] > 0, "with continuity on, hops went to the session's owner"
    # A hop fails only where the deploy stopped the owner (gone, or draining), which takeover is for.
    failed = {reason for reason, n in audit["forwarding"]["failed_by_reason"].items() if n}
    assert failed <= {"owner_gone", "owner_draining"}, audit["forwarding"]
    table = comparison_rows(err)
    assert table[""] == ["continuity off", "continuity forward", "continuity adopt"]
    assert table["worker deployed mid-run (SIGTERM, then the new process)"] == ["—", "—", "worker-0"]
    broken_off, broken_forward, broken_adopt = table["sessions broken: 404 'Session not found' after a worker hop"]
    assert int(broken_off) > 0, "without continuity the official client's sessions break"
    assert (int(broken_forward), int(broken_adopt)) == (0, 0), "exit 0 promises that none broke with continuity on"
    assert table["other errors"][2] == "0", "a worker deployed mid-run costs no request"
    assert "Deploying worker-0: SIGTERM, then the new process on the same port" in err
    assert processes_carrying(token) == []
    assert nothing_listens_on(redis_port(err))


def comparison_rows(output: str) -> dict[str, list[str]]:
    """The demo's "without and with continuity" table: row label -> [off, forward, adopt] ("" -> the headers)."""
    rows = {}
    start = output.index("Legacy clients without and with continuity")
    for line in output[start:].splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").replace("┃", "│").split("│")]
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    return rows


def test_ctrl_c_stops_everything_and_leaves_no_process() -> None:
    proc, token = start_demo("--duration", "120", "--workers", "2", "--clients", "1")
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # Redis, the workers, the balancer, then traffic
            seen.append(line)
            if line.startswith("Balancer"):
                break
        assert len(processes_carrying(token)) == 4  # the demo, 2 workers, the balancer
        assert not nothing_listens_on(port := redis_port("".join(seen)))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert processes_carrying(token) == []
    assert nothing_listens_on(port)


def test_a_worker_that_cannot_start_fails_the_demo_with_its_error_and_leaves_no_process() -> None:
    proc, token = start_demo("--duration", "5", env={"MCP_DEMO_STATELESS": "maybe"})
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1
    lines = out.strip().splitlines()
    assert "mcp-registry demo: worker-0 (mcp_registry.demo:app) exited with code 1:" in lines
    assert lines[-1].startswith("ValueError: MCP_DEMO_STATELESS must be one of")  # the worker's own words
    assert processes_carrying(token) == []
    assert nothing_listens_on(redis_port(out))
