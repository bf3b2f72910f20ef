"""The release, as a user gets it: `python -m build`, `twine check`, then `pip install` of the wheel.

The distributions are built from this checkout and checked (complete metadata, a README PyPI
renders); the wheel — not an editable checkout — is installed with no extras into a fresh
virtualenv, as `pip install mcp-session-continuity` does. From it, `mcp-registry audit` runs
against a real redis-server, an app wrapped by the middleware answers real requests under
uvicorn, and `mcp-registry demo` and continuity say in one line what they need.
"""

from __future__ import annotations

import email.parser
import json
import secrets
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mcp_registry.demo._process import free_ports
from mcp_registry.demo.redis_cluster import wait_until
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.registry.key_schema import KeySchema, f_created, minute_of
from mcp_registry.testing import initialize_request, session_headers, tool_call

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel `python -m build` makes of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory, distributions: Path) -> Path:
    """`bin/` of a fresh virtualenv with the built wheel installed, no extras."""
    [wheel] = distributions.glob("*.whl")
    root = tmp_path_factory.mktemp("plain-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "bin"


@pytest.mark.timeout(900)
def test_the_distributions_pass_twine_check_with_complete_metadata(distributions: Path) -> None:
    names = sorted(p.name for p in distributions.iterdir())
    assert names == ["mcp_session_continuity-0.1.0-py3-none-any.whl", "mcp_session_continuity-0.1.0.tar.gz"]
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, distributions.iterdir())],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    [wheel] = distributions.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(
            archive.read("mcp_session_continuity-0.1.0.dist-info/METADATA").decode()
        )
        entry_points = archive.read("mcp_session_continuity-0.1.0.dist-info/entry_points.txt").decode()
        files = archive.namelist()
    assert metadata["Name"] == "mcp-session-continuity"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert any(r.startswith("mcp<3,>=1.26") for r in metadata.get_all("Requires-Dist") or [])
    assert {"otel", "continuity", "cli"} <= set(metadata.get_all("Provides-Extra") or [])
    assert any(u.startswith("Homepage, https://") for u in metadata.get_all("Project-URL") or [])
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {"Programming Language :: Python :: 3.11", "Typing :: Typed"} <= classifiers
    assert "mcp-registry = mcp_registry.cli:main" in entry_points
    assert "mcp_registry/py.typed" in files
    assert not any(name.startswith(("tests/", "bench/")) for name in files), "only the package ships"


APP = """
from mcp.server.mcpserver import MCPServer
from mcp_registry import SessionRegistryMiddleware

server = MCPServer("from-the-wheel")


@server.tool()
def add(a: int, b: int) -> int:
    return a + b


app = SessionRegistryMiddleware(server.streamable_http_app(json_response=True))
"""


@pytest.mark.timeout(900)
def test_an_app_wrapped_from_the_wheel_serves_real_requests_and_the_audit_sees_them(
    plain_install: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "wheel_app.py").write_text(APP)
    [port] = free_ports(1, "127.0.0.1")
    env = {"PATH": f"{plain_install}:/usr/bin:/bin", "MCP_SESSION_REGISTRY": "1", "MCP_SESSION_REGISTRY_URL":
           redis_server.url, "MCP_SESSION_REGISTRY_PREFIX": "wheel", "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "1"}
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [str(plain_install / "python"), "-m", "uvicorn", "wheel_app:app", "--app-dir", str(tmp_path),
         "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        wait_until(lambda: (tmp_path / "uvicorn.log").read_bytes(),
                   lambda text: b"Application startup complete." in text or server.poll() is not None,
                   bound=30, what="the wheel's app to start")  # fmt: skip
        opened = httpx.post(url, json=initialize_request(), headers=session_headers(None), timeout=10)
        session_id = opened.headers["mcp-session-id"]
        headers = session_headers(session_id)
        called = httpx.post(url, json=tool_call("add", {"a": 2, "b": 3}), headers=headers, timeout=10)
        made_up = httpx.post(url, json=tool_call("add", {"a": 1, "b": 1}), headers=session_headers("made-up"))

        assert opened.status_code == 200
        assert called.json()["result"]["content"][0]["text"] == "5"
        assert made_up.status_code == 404

        def audit() -> dict[str, Any]:
            done = cli(plain_install, "audit", "--json", "--url", redis_server.url, "--prefix", "wheel")
            return json.loads(done.stdout) if done.returncode == 0 else {}

        # The worker flushes its counters every second.
        document = wait_until(audit, lambda d: d.get("lookups", {}).get("fabricated") == 1, bound=30,
                              what="the audit to see the wheel app's requests")  # fmt: skip
        assert document["sessions"]["created"] == 1
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def cli(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "mcp-registry"), *args], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "COLUMNS": "120"})


@pytest.mark.timeout(900)
def test_the_audit_works_from_a_plain_install(plain_install: Path, redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.hincrby(KeySchema("mcpreg").minute(minute_of(time.time())), f_created("worker-a"), 3)

    as_json = cli(plain_install, "audit", "--json", "--url", redis_server.url)
    tables = cli(plain_install, "audit", "--url", redis_server.url)

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["sessions"]["created"] == 3
    assert tables.returncode == 0, tables.stderr
    assert "worker-a" in tables.stdout


@pytest.mark.timeout(900)
def test_a_dead_url_is_one_line_and_a_non_zero_exit(plain_install: Path) -> None:
    done = cli(plain_install, "audit", "--url", "redis://127.0.0.1:1/0")

    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(900)
def test_the_demo_says_in_one_line_what_to_install(plain_install: Path) -> None:
    done = cli(plain_install, "demo", "--duration", "1")

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "mcp-registry demo: needs the demo's extra (httpx, uvloop, httptools, aiohttp missing): "
        "pip install 'mcp-session-continuity[cli]'"
    ]


@pytest.mark.timeout(900)
def test_continuity_without_its_extra_says_what_to_install(plain_install: Path) -> None:
    build = (
        "from mcp.server.mcpserver import MCPServer\n"
        "from mcp_registry import SessionRegistryMiddleware\n"
        "SessionRegistryMiddleware(MCPServer('x').streamable_http_app())\n"
    )
    done = subprocess.run(
        [str(plain_install / "python"), "-c", build], capture_output=True, text=True, timeout=60, check=False,
        env={"MCP_SESSION_CONTINUITY": "forward", "MCP_SESSION_REGISTRY_HASH_KEY": secrets.token_urlsafe(32)},
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "mcp_registry.env.ConfigError: MCP_SESSION_CONTINUITY=forward needs the continuity extra "
        "(aiohttp is missing): pip install 'mcp-session-continuity[continuity]'"
    )
