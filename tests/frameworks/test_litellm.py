"""LiteLLM's proxy (1.110) with the registry in front of its MCP endpoint: the recipe of deploy/litellm/.

Real processes: a real redis-server; the demo MCP server as LiteLLM's upstream; LiteLLM's proxy app
wrapped by `deploy/litellm/registry_app.py` under uvicorn, configured as its docs say
(`config.yaml` with `mcp_servers:` and a model). The official Python client (legacy) talks MCP
through LiteLLM; a made-up id and LLM traffic go through it too. What a user would check:

- the MCP session through LiteLLM works (its tool, prefixed by the server name, answers);
- the registry recorded the session (client name included) and classified the made-up id;
- chat completions and health probes pass untouched: neither counted nor teed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, Implementation
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ENV_REFRESH_SECONDS, ENV_REGISTRY, ENV_URL
from mcp_registry.testing import initialize_request, session_headers, tool_call

pytestmark = pytest.mark.integration

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "litellm"
PREFIX = "litellm"
MASTER_KEY = "sk-litellm-test-master-key"
AUTH = {"x-litellm-api-key": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def upstream() -> Iterator[str]:
    """The demo MCP server, LiteLLM's upstream (no registry of its own)."""
    with WorkerCluster(1, env={"MCP_DEMO_ALLOWED_HOSTS": "*"}) as server:
        yield server.urls[0]


@pytest.fixture
def litellm(upstream: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params: {model: openai/fake, api_key: sk-fake, mock_response: hello from the mock}\n"
        "mcp_servers:\n"
        f"  demo: {{url: {upstream}/mcp, transport: http}}\n"
    )
    env = {
        "CONFIG_FILE_PATH": str(config), "PYTHONPATH": str(RECIPE), "LITELLM_MASTER_KEY": MASTER_KEY,
        ENV_REGISTRY: "1", ENV_URL: redis_server.url, "MCP_SESSION_REGISTRY_PREFIX": PREFIX,
        ENV_REFRESH_SECONDS: "1",
    }  # fmt: skip
    with WorkerCluster(1, app="registry_app:app", env=env, health_path="/health/liveliness",
                       startup_timeout=120) as proxy:  # fmt: skip
        yield proxy.urls[0]


def audit(redis_url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--json", "--url", redis_url, "--prefix", PREFIX],
        env={k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stderr  # 3: nothing recorded yet
    return json.loads(done.stdout) if done.returncode == 0 else {}


def until_audit(redis_url: str, ready: Any) -> dict[str, Any]:
    """The audit once `ready(document)` holds (bounded: 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        document = audit(redis_url)
        if document and ready(document):
            return document
        assert time.monotonic() < deadline, f"the audit never showed it: {document}"
        time.sleep(0.5)  # between two reads of a bounded poll


def test_a_legacy_client_through_litellm_is_recorded_and_llm_routes_are_untouched(
    litellm: str, redis_server: RedisServer
) -> None:
    async def official_client() -> list[str]:
        info = Implementation(name="litellm-test-client", version="1.0")
        async with create_mcp_http_client(headers=AUTH) as http_client:  # (the client passes the key)
            transport = streamable_http_client(f"{litellm}/mcp", http_client=http_client)
            async with Client(transport, mode="legacy", client_info=info) as client:
                names = [tool.name for tool in (await client.list_tools()).tools]
                result = await client.call_tool("demo-add", {"a": 2, "b": 3})
        texts = [getattr(block, "text", "") for block in result.content]
        assert "5" in texts
        return names

    names = anyio.run(official_client)
    assert "demo-add" in names

    with httpx.Client(timeout=30, headers=AUTH) as http:
        # LiteLLM itself serves a stale id statelessly (it strips it); the registry tells what it was.
        made_up = http.post(f"{litellm}/mcp", json=tool_call("demo-add", {"a": 1, "b": 1}),
                            headers=session_headers("made-up-00112233445566778899"))  # fmt: skip
        assert made_up.status_code == 200
        first = until_audit(redis_server.url, lambda d: d["lookups"]["fabricated"] == 1)
        assert first["sessions"]["created"] == 1
        assert [c["name"] for c in first["clients"]] == ["litellm-test-client"]
        legacy = first["protocol_eras"]["legacy"]

        for _ in range(5):
            chat = http.post(f"{litellm}/chat/completions", headers={"authorization": f"Bearer {MASTER_KEY}"},
                             json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert chat.status_code == 200
            assert "hello from the mock" in chat.text
            assert http.get(f"{litellm}/health/liveliness").status_code == 200
        # One more MCP request marks the point after the LLM traffic (counters are flushed in order).
        opened = http.post(f"{litellm}/mcp", json=initialize_request("marker"), headers=session_headers(None))
        assert opened.status_code == 200

    after = until_audit(redis_server.url, lambda d: d["sessions"]["created"] == 2)
    assert after["protocol_eras"]["legacy"] == legacy + 1  # the marker; chat and health not counted
    assert after["lookups"]["missing"] == 0
