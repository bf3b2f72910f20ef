"""Configure the OpenTelemetry SDK for the demo app from the environment.

The library itself only uses the OpenTelemetry API; an application decides where spans and
metrics go. The demo decides here, from standard `OTEL_*` variables plus two of its own:

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`): export spans (batched, `OTEL_BSP_*`) and metrics
  (periodically, `OTEL_METRIC_EXPORT_INTERVAL`) over OTLP/HTTP;
- `OTEL_SERVICE_NAME`: `service.name` of the resource (default `mcp-registry-demo`);
- `OTEL_TRACES_EXPORTER=none`, `OTEL_METRICS_EXPORTER=none`: turn one signal off;
  `OTEL_SDK_DISABLED=true`: configure nothing;
- `MCP_DEMO_PROMETHEUS_PORT`: serve this process's metrics for Prometheus to scrape, on a
  port (`9464`), or on the first free one of a list or range (`9464-9467`, `9464,9470`) so
  that every process of `uvicorn --workers N` gets one; `MCP_DEMO_PROMETHEUS_ADDR`: its
  address (default `127.0.0.1`).

Every worker process calls `configure_from_env` with its own worker id, which becomes
`service.instance.id`: Prometheus then tells the workers apart (`instance`), and so does
Tempo. A Prometheus port belongs to one process: give N workers at least N ports.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from mcp_registry.env import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource

logger = logging.getLogger(__name__)

ENV_PROMETHEUS_PORT: Final = "MCP_DEMO_PROMETHEUS_PORT"
ENV_PROMETHEUS_ADDR: Final = "MCP_DEMO_PROMETHEUS_ADDR"
DEFAULT_SERVICE_NAME: Final = "mcp-registry-demo"
DEFAULT_PROMETHEUS_ADDR: Final = "127.0.0.1"

_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_OTLP_METRICS_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
_OTLP_PROTOCOLS: Final = (
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)

_lock = threading.Lock()
_configured = False


def configure_from_env(worker_id: str, service_name: str = DEFAULT_SERVICE_NAME) -> None:
    """Set the global tracer and meter providers of this process from the environment.

    Does nothing when the OpenTelemetry SDK is not installed, when `OTEL_SDK_DISABLED` is
    true, or when a global SDK provider is already set (e.g. by `opentelemetry-instrument`).
    The first successful call wins; later calls are no-ops. Invalid settings raise
    `ConfigError` naming the variable, before anything is started or set.
    """
    global _configured
    with _lock:
        if _configured:
            return
        try:
            _configure(os.environ, worker_id, service_name)
        except ImportError as exc:
            logger.info("OpenTelemetry SDK or exporter not installed (%s): no spans or metrics exported", exc.name)
        _configured = True


def _configure(env: Mapping[str, str], worker_id: str, service_name: str) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    if _flag(env, "OTEL_SDK_DISABLED"):
        return
    prometheus = _prometheus_address(env)
    export_traces = _otlp_wanted(env, _OTLP_TRACES_ENDPOINT, "OTEL_TRACES_EXPORTER")
    export_metrics = _otlp_wanted(env, _OTLP_METRICS_ENDPOINT, "OTEL_METRICS_EXPORTER")
    if export_traces or export_metrics:
        _require_http_protobuf(env)

    resource = _resource(env, worker_id, service_name)
    readers: list[MetricReader] = []
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        if prometheus is not None:  # first: the one step that can fail, and then nothing else has started
            readers.append(_serve_prometheus(*prometheus))
        if export_metrics:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if readers:
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))

    if export_traces and not isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(tracer_provider)


def _resource(env: Mapping[str, str], worker_id: str, service_name: str) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, OTELResourceDetector
    from opentelemetry.sdk.resources import Resource as SdkResource

    attributes: dict[str, str] = {SERVICE_INSTANCE_ID: worker_id}
    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over our default.
    if not env.get("OTEL_SERVICE_NAME") and SERVICE_NAME not in OTELResourceDetector().detect().attributes:
        attributes[SERVICE_NAME] = service_name
    return SdkResource.create(attributes)


def _serve_prometheus(addr: str, ports: Sequence[int]) -> MetricReader:
    """Listen on the first free port of `ports` and return the reader that feeds it."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    for port in ports:
        try:
            start_http_server(port, addr=addr)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"{ENV_PROMETHEUS_PORT}: cannot listen on {addr}:{port} ({exc.strerror})") from exc
            continue
        logger.info("Prometheus metrics of this worker on http://%s:%d/metrics", addr, port)
        return PrometheusMetricReader()
    raise ConfigError(
        f"{ENV_PROMETHEUS_PORT}: every port of {_describe(ports)} on {addr} is in use; "
        "each worker process needs a port of its own"
    )


def _prometheus_address(env: Mapping[str, str]) -> tuple[str, list[int]] | None:
    raw = env.get(ENV_PROMETHEUS_PORT, "").strip()
    if not raw:
        return None
    ports: list[int] = []
    for item in raw.split(","):
        first, _, last = item.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            low, high = 0, -1
        if not 1 <= low <= high <= 65535:
            raise ConfigError(
                f"{ENV_PROMETHEUS_PORT} must be a port (1-65535), a range like 9464-9467, or a comma-separated "
                f"list of them; got {raw!r}"
            )
        ports.extend(range(low, high + 1))
    addr = env.get(ENV_PROMETHEUS_ADDR, "").strip() or DEFAULT_PROMETHEUS_ADDR
    return addr, ports


def _describe(ports: Sequence[int]) -> str:
    return str(ports[0]) if len(ports) == 1 else f"{len(ports)} ports ({ports[0]}...{ports[-1]})"


def _otlp_wanted(env: Mapping[str, str], signal_endpoint: str, exporter_variable: str) -> bool:
    if env.get(exporter_variable, "").strip().lower() == "none":
        return False
    return bool(env.get(_OTLP_ENDPOINT, "").strip() or env.get(signal_endpoint, "").strip())


def _require_http_protobuf(env: Mapping[str, str]) -> None:
    for name in _OTLP_PROTOCOLS:
        value = env.get(name, "").strip()
        if value and value != "http/protobuf":
            raise ConfigError(
                f"{name} must be 'http/protobuf' for the demo (it ships the OTLP/HTTP exporter); got {value!r}"
            )


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"
