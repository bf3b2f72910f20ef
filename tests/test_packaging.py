"""A plain `pip install mcp-registry` (no extras), as a new user does it: the CLI works.

The package is installed into a fresh virtualenv from this checkout; `mcp-registry audit` then
runs against a real redis-server holding a registry, and `mcp-registry demo` says in one line
what it needs.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import venv
from pathlib import Path

import pytest
import redis

from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.registry.key_schema import KeySchema, f_created, minute_of

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bin/` of a fresh virtualenv with `pip install <this checkout>`, no extras."""
    root = tmp_path_factory.mktemp("plain-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "bin"


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
        "pip install 'mcp-registry[cli]'"
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
        "(aiohttp is missing): pip install 'mcp-registry[continuity]'"
    )
