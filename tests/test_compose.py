"""docker-compose.yml, the Dockerfile and deploy/ checked statically (no Docker engine runs here).

The compose file must validate against the Compose Specification's JSON schema, pull only
pinned images, publish ports on 127.0.0.1 only, configure the app only through variables the
code reads (`MCP_SESSION_*` from `mcp_registry.config`, the OpenTelemetry SDK's `OTEL_*`),
and wire the pieces together: the balancer in front of the app services, the app's Redis and
OTLP endpoints on services of the stack, Grafana's provisioning and dashboards mounted where
the provisioning files say.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jsonschema
import opentelemetry.environment_variables as otel_api_env
import opentelemetry.sdk.environment_variables as otel_sdk_env
import pytest
import yaml
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request

from mcp_registry import config
from mcp_registry.config import RegistryConfig
from mcp_registry.demo import telemetry_setup
from mcp_registry.demo.app import _transport_security

# The module (`from mcp_registry.demo import app` would build the ASGI app of the same name).
demo_app = importlib.import_module("mcp_registry.demo.app")

REPO: Final = Path(__file__).resolve().parents[1]
COMPOSE_FILE: Final = REPO / "docker-compose.yml"
SCHEMA_FILE: Final = Path(__file__).parent / "data" / "compose-spec.json"
DOCKERFILE: Final = REPO / "Dockerfile"
NGINX_CONF: Final = REPO / "deploy" / "nginx.conf"
LOCALHOST: Final = "127.0.0.1"

Service = dict[str, Any]


def _constants(module: object, prefix: str) -> set[str]:
    return {value for name, value in vars(module).items() if name.startswith(prefix) and isinstance(value, str)}


DOCUMENTED_APP_VARIABLES: Final = (
    _constants(config, "ENV_")
    | _constants(telemetry_setup, "ENV_")
    | _constants(demo_app, "ENV_")
    | {v for v in _constants(otel_sdk_env, "OTEL_") | _constants(otel_api_env, "OTEL_") if v.startswith("OTEL_")}
)
"""Every variable something in the app reads: mcp_registry's config, the demo, the OpenTelemetry SDK."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found: dict[str, Service] = compose["services"]
    return found


def _built_from_dockerfile(service: Service) -> bool:
    build = service.get("build")
    return build is not None and (build == "." or build.get("context") == ".")


def _environment(service: Service) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def _bind_mounts(service: Service) -> dict[str, str]:
    """Container target -> repository source of every bind mount of `service`."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def _image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.search(r"\d", tag) is not None


# --- the specification ------------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_the_schema_check_rejects_a_misspelt_service_key(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["enviroment"] = {"A": "1"}
    with pytest.raises(jsonschema.ValidationError, match="enviroment"):
        jsonschema.Draft7Validator(schema).validate(broken)


# --- images and ports -------------------------------------------------------------------------
def test_every_image_is_pinned_to_an_exact_tag(services: dict[str, Service]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "image" in service:
            assert _image_is_pinned(service["image"]), f"{name}: {service['image']} is not pinned to a tag"


def test_the_dockerfile_base_image_is_pinned_and_everything_it_copies_exists() -> None:
    lines = [line.split() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    bases = [words[1] for words in lines if words[0] == "FROM"]
    assert bases
    assert all(_image_is_pinned(base) for base in bases), bases
    sources = [source for words in lines if words[0] == "COPY" for source in words[1:-1]]
    assert sources
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"the Dockerfile copies files that do not exist: {missing}"


def test_every_published_port_is_bound_to_localhost(services: dict[str, Service]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == LOCALHOST, f"{name}: port {port} is not bound to {LOCALHOST}"
    assert published > 0


# --- the app's configuration ------------------------------------------------------------------
def test_the_app_is_configured_only_through_documented_variables(services: dict[str, Service]) -> None:
    apps = {name: s for name, s in services.items() if _built_from_dockerfile(s) and "environment" in s}
    assert apps
    for name, service in apps.items():
        undocumented = set(_environment(service)) - DOCUMENTED_APP_VARIABLES
        assert not undocumented, f"{name}: variables nothing reads: {sorted(undocumented)}"


def test_the_app_configuration_is_valid_and_points_at_services_of_the_stack(services: dict[str, Service]) -> None:
    apps = [s for s in services.values() if _built_from_dockerfile(s) and "environment" in s]
    for service in apps:
        env = _environment(service)
        registry = RegistryConfig.from_env(env)  # raises ConfigError on any invalid value
        assert registry.enabled
        assert urlsplit(registry.url).hostname in services
        assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in services


def test_the_balancer_spreads_requests_over_the_app_services_without_stickiness(
    services: dict[str, Service],
) -> None:
    conf = NGINX_CONF.read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+);", conf, flags=re.MULTILINE)
    app_services = {name for name, s in services.items() if _built_from_dockerfile(s) and "profiles" not in s}
    assert {host for host, _ in upstreams} == app_services
    assert len(app_services) >= 2
    assert not re.search(r"^\s*(ip_hash|hash|sticky|keepalive)\b", conf, flags=re.MULTILINE)
    balancer = next(s for s in services.values() if "./deploy/nginx.conf" in _bind_mounts(s).values())
    assert set(balancer["depends_on"]) == app_services


async def test_the_app_accepts_the_host_names_the_balancer_is_reached_by(services: dict[str, Service]) -> None:
    conf = NGINX_CONF.read_text()
    assert re.search(r"proxy_set_header\s+Host\s+\$http_host;", conf), "the balancer must forward the client's Host"
    listen = re.search(r"^\s*listen\s+(\d+);", conf, flags=re.MULTILINE)
    assert listen is not None
    balancer_name, balancer = next(
        (name, s) for name, s in services.items() if "./deploy/nginx.conf" in _bind_mounts(s).values()
    )
    published = [str(port).rsplit(":", 1)[0].rsplit(":", 1)[1] for port in balancer["ports"]]
    hosts = [f"{balancer_name}:{listen.group(1)}"] + [f"{h}:{p}" for p in published for h in (LOCALHOST, "localhost")]
    apps = [s for s in services.values() if _built_from_dockerfile(s) and "environment" in s]
    for service in apps:
        # Unset, the SDK would accept only loopback names, and `balancer:8080` would get 421.
        settings = _transport_security(_environment(service))
        assert settings is not None, "set MCP_DEMO_ALLOWED_HOSTS for the app behind the balancer"
        security = TransportSecurityMiddleware(settings)
        for host in [*hosts, "attacker.example:8080"]:
            headers = [(b"host", host.encode()), (b"content-type", b"application/json")]
            refusal = await security.validate_request(Request({"type": "http", "headers": headers}), is_post=True)
            assert (refusal is None) == (host in hosts), f"Host {host}: {refusal}"


def test_grafana_reads_the_provisioning_and_dashboards_of_this_repository(services: dict[str, Service]) -> None:
    grafana = next(s for s in services.values() if "GF_PATHS_PROVISIONING" in _environment(s))
    mounts = _bind_mounts(grafana)
    env = _environment(grafana)
    assert mounts[env["GF_PATHS_PROVISIONING"]] == "./grafana/provisioning"
    for path in sorted((REPO / "grafana" / "provisioning" / "dashboards").glob("*.yaml")):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            assert mounts[provider["options"]["path"]] == "./grafana/dashboards", provider
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (REPO / mounts[str(home.parent)] / home.name).is_file()
    for target, source in mounts.items():
        assert (REPO / source).exists(), f"{target} mounts {source}, which does not exist"


def test_the_traffic_profile_runs_code_that_exists(services: dict[str, Service]) -> None:
    traffic = [s for s in services.values() if "traffic" in s.get("profiles", [])]
    assert len(traffic) == 1
    command = [str(part) for part in traffic[0]["command"]]
    assert command[:3] == ["python", "-m", "mcp_registry.demo.traffic"]
    args = importlib.import_module("mcp_registry.demo.traffic").build_parser().parse_args(command[3:])
    assert args.url == "http://balancer:8080"
