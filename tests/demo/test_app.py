from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from mcp import Client
from mcp_types import TextContent

from mcp_registry.demo.app import build_app
from mcp_registry.demo.cluster import WorkerCluster

StartCluster = Callable[..., WorkerCluster]


def python(code: str) -> str:
    """Run `code` in a fresh interpreter (imports are process-wide) and return what it printed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.integration
async def test_the_tools_answer_and_whoami_names_the_serving_worker(worker_cluster: StartCluster) -> None:
    url = worker_cluster(1).urls[0]
    async with Client(url + "/mcp", mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        added = await client.call_tool("add", {"a": 2, "b": 3})
        echoed = await client.call_tool("echo", {"text": "héllo"})
        me = await client.call_tool("whoami", {})
        counts = [(await client.call_tool("count", {})).structured_content for _ in range(3)]
    assert tools == {"add", "echo", "whoami", "count", "countdown", "confirm"}
    assert counts == [{"result": 1}, {"result": 2}, {"result": 3}], "count keeps state per session"
    assert (added.structured_content, echoed.structured_content) == ({"result": 5}, {"result": "héllo"})
    assert [b.text for b in me.content if isinstance(b, TextContent)] == ["worker-0"]
    async with httpx.AsyncClient() as http:
        assert (await http.get(url + "/healthz")).status_code == 200


async def test_count_is_per_session(worker_cluster: StartCluster) -> None:
    url = worker_cluster(1).urls[0] + "/mcp"
    async with Client(url, mode="legacy") as first, Client(url, mode="legacy") as second:
        await first.call_tool("count", {})
        await first.call_tool("count", {})
        other = await second.call_tool("count", {})
    assert other.structured_content == {"result": 1}


def test_an_invalid_json_response_flag_fails_at_start_up_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="MCP_DEMO_JSON_RESPONSE must be one of"):
        build_app({"MCP_DEMO_JSON_RESPONSE": "sometimes"})


def test_an_invalid_stateless_flag_fails_at_start_up_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="MCP_DEMO_STATELESS must be one of"):
        build_app({"MCP_DEMO_STATELESS": "maybe"})


def test_importing_the_demo_infrastructure_builds_no_app() -> None:
    imported = python(
        "import sys, mcp_registry.demo.runner, mcp_registry.demo.cluster, mcp_registry.demo.traffic;"
        "print('mcp_registry.demo.app' in sys.modules)"
    )
    assert imported == "False"


def test_the_demo_package_attribute_app_is_the_wrapped_asgi_app() -> None:
    kind = python("from mcp_registry.demo import app; print(type(app).__name__)")
    assert kind == "SessionRegistryMiddleware"


async def test_allowed_hosts_let_a_proxy_name_reach_the_app() -> None:
    import httpx

    from mcp_registry.demo.app import build_app
    from mcp_registry.testing import initialize_request, lifespan, session_headers

    for allowed, status in (("", 421), ("balancer:*", 200), ("*", 200)):
        app = build_app({"MCP_DEMO_ALLOWED_HOSTS": allowed, "MCP_SESSION_REGISTRY_WORKER_ID": "w"})
        transport = httpx.ASGITransport(app=app)
        async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://balancer:8080") as client:
            response = await client.post("/mcp", json=initialize_request(), headers=session_headers(None))
        assert response.status_code == status, allowed
