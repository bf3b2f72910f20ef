"""`configure_from_env` in real processes (it sets process-wide providers, so never in this one)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_registry.demo._process import free_ports
from mcp_registry.demo.telemetry_setup import DEFAULT_SERVICE_NAME, ENV_PROMETHEUS_PORT

pytestmark = pytest.mark.integration

# A worker: configure (twice: the second call must change nothing), count once, then wait.
WORKER: Final = """
import sys
from opentelemetry import metrics, trace
from mcp_registry.demo.telemetry_setup import configure_from_env
configure_from_env(sys.argv[1])
configure_from_env("a-second-call")
metrics.get_meter("test").create_counter("demo.ticks", unit="{tick}").add(1)
print(type(metrics.get_meter_provider()).__module__, type(trace.get_tracer_provider()).__module__, flush=True)
sys.stdin.read()
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MCP_DEMO_"))}
    return {**env, **extra}


@contextmanager
def _worker(worker_id: str, env: Mapping[str, str]) -> Iterator[str]:
    """Run WORKER until the block ends; yields the line it prints once configured."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, worker_id],
        env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        yield line.strip()
    finally:
        proc.communicate(input="", timeout=10)


def _configure_error(env: Mapping[str, str]) -> str:
    """Run `configure_from_env` in a child expected to fail; return its stderr."""
    code = "from mcp_registry.demo.telemetry_setup import configure_from_env; configure_from_env('w')"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    return out.stderr


def _target_info(port: int) -> dict[str, str]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "demo_ticks" in families, text
    return dict(families["target_info"].samples[0].labels)


def test_each_worker_serves_its_metrics_on_the_first_free_port_and_names_itself() -> None:
    ports = free_ports(2)
    env = _clean_env(**{ENV_PROMETHEUS_PORT: ",".join(map(str, ports))})
    with _worker("worker-a", env) as first, _worker("worker-b", env) as second:
        assert first.split()[0].startswith("opentelemetry.sdk")
        assert second.split()[0].startswith("opentelemetry.sdk")
        infos = [_target_info(port) for port in ports]
    assert {info["service_instance_id"] for info in infos} == {"worker-a", "worker-b"}
    assert {info["service_name"] for info in infos} == {DEFAULT_SERVICE_NAME}


def test_otel_service_name_wins_over_the_default() -> None:
    port = free_ports(1)[0]
    with _worker("worker-a", _clean_env(**{ENV_PROMETHEUS_PORT: str(port), "OTEL_SERVICE_NAME": "shop-mcp"})):
        assert _target_info(port)["service_name"] == "shop-mcp"


def test_a_port_range_is_accepted() -> None:
    port = free_ports(1)[0]
    with _worker("worker-a", _clean_env(**{ENV_PROMETHEUS_PORT: f"{port}-{port}"})):
        assert _target_info(port)["service_instance_id"] == "worker-a"


def test_without_exporter_variables_no_sdk_provider_is_installed() -> None:
    with _worker("worker-a", _clean_env()) as providers:
        assert "sdk" not in providers


INVALID_PORTS: Final = ("abc", "0", "70000", "9470-9464", "9464,", "9464;9465")


def test_an_invalid_prometheus_port_fails_naming_the_variable() -> None:
    # One child tries every value: each call fails before it configures anything, so the next one runs.
    code = f"""
import os, json
from mcp_registry.env import ConfigError
from mcp_registry.demo.telemetry_setup import configure_from_env
errors = {{}}
for value in {INVALID_PORTS!r}:
    os.environ[{ENV_PROMETHEUS_PORT!r}] = value
    try:
        configure_from_env("w")
    except ConfigError as exc:
        errors[value] = str(exc)
print(json.dumps(errors))
"""
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=30)
    errors = json.loads(out.stdout)
    assert set(errors) == set(INVALID_PORTS), out.stderr
    assert all(ENV_PROMETHEUS_PORT in message for message in errors.values()), errors


def test_ports_all_in_use_fail_naming_the_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stderr = _configure_error(_clean_env(**{ENV_PROMETHEUS_PORT: str(port)}))
    assert ENV_PROMETHEUS_PORT in stderr
    assert "in use" in stderr


def test_an_otlp_protocol_other_than_http_protobuf_fails_naming_the_variable() -> None:
    env = _clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in _configure_error(env)
