"""The TypeScript SDK client (`@modelcontextprotocol/sdk`, installed by `.ci/run` with npm) through the stack.

Before continuity this client failed inside `connect()`: its `notifications/initialized` landed on
a worker that did not hold the session. `tests/clients/ts/rounds.mjs` is the client as a user
writes it; it prints one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from mcp_registry.demo.proxies import nginx_on_path
from mcp_registry.demo.redis_server import RedisServer
from tests.conftest import require
from tests.integration.continuity_stack import Deployment, deployment, host_env

pytestmark = pytest.mark.integration
CLIENT_DIR: Final = Path(__file__).resolve().parents[1] / "clients" / "ts"
ROUNDS: Final = 20


@pytest.fixture
def node_client() -> Path:
    node = shutil.which("node")
    require(node is not None, "node (Node.js)")
    require((CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(),
            f"the TypeScript SDK client (npm ci in {CLIENT_DIR})")
    return CLIENT_DIR / "rounds.mjs"


def run_client(script: Path, url: str) -> dict[str, object]:
    done = subprocess.run(
        ["node", str(script), url, str(ROUNDS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def stack(redis_server: RedisServer) -> Iterator[Deployment]:
    require(nginx_on_path() is not None, "nginx (Debian package)")
    with deployment(redis_server.url) as started:
        yield started


def test_the_typescript_sdk_client_keeps_its_session_through_round_robin_nginx(
    node_client: Path, stack: Deployment
) -> None:
    result = run_client(node_client, stack.url)

    assert result["connected"] is True
    assert result["errors"] == []
    assert result["counts"] == list(range(1, ROUNDS + 1))


def test_without_continuity_the_typescript_client_fails_as_before(node_client: Path, redis_server: RedisServer) -> None:
    require(nginx_on_path() is not None, "nginx (Debian package)")

    def off(i: int, address: str) -> dict[str, str]:
        return host_env(address, redis_server.url, continuity="off")

    with deployment(redis_server.url, env=off) as stack:
        result = run_client(node_client, stack.url)

    assert result["errors"], "the measured failure this feature removes"
