"""Helpers to test an app wrapped by `SessionRegistryMiddleware` (and to test mcp_registry itself).

- `capture_telemetry()`: an in-memory tracer and meter provider to pass to the middleware,
  with `spans()` and `metric_points()` to assert on what it recorded.
- `lifespan(app)`: run an ASGI app's lifespan (startup on enter, shutdown on exit) so that the
  SDK's session manager and the registry's background work run, e.g. under httpx's ASGI
  transport.
- `serve(app)`: serve an ASGI app with a real uvicorn server on a free loopback port, in the
  current event loop (needs the `cli` extra for uvicorn).

These need the OpenTelemetry SDK (the `otel` extra).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import ASGIApp, Message

from mcp_registry.telemetry import SPAN_RESOLVE


@dataclass
class CapturedTelemetry:
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    tracer_provider: TracerProvider = field(init=False)
    meter_provider: MeterProvider = field(init=False)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = SPAN_RESOLVE) -> list[ReadableSpan]:
        """Finished spans, ours by default."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def metric_points(self, name: str) -> list[tuple[Mapping[str, Any], float]]:
        """`(attributes, value)` of every point of metric `name` (sums and gauges; histogram counts)."""
        data = self.reader.get_metrics_data()
        points: list[tuple[Mapping[str, Any], float]] = []
        if data is None:
            return points
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        total = float(value) if value is not None else float(getattr(point, "count", 0))
                        points.append((dict(point.attributes or {}), total))
        return points

    def metric_total(self, name: str, **attributes: Any) -> float:
        """The sum of `name`'s points whose attributes include `attributes` (dots as underscores)."""
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return sum(v for attrs, v in self.metric_points(name) if all(attrs.get(k) == w for k, w in wanted.items()))


def capture_telemetry() -> CapturedTelemetry:
    return CapturedTelemetry()


@asynccontextmanager
async def lifespan(app: ASGIApp, *, timeout: float = 10.0) -> AsyncIterator[None]:
    """Run `app`'s ASGI lifespan: startup before the body, shutdown after it."""
    to_app_send, to_app = anyio.create_memory_object_stream[Message](4)
    from_app_send, from_app = anyio.create_memory_object_stream[Message](4)

    async def run_app() -> None:
        async def receive() -> Message:
            return await to_app.receive()

        async def send(message: Message) -> None:
            await from_app_send.send(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    failed: str | None = None
    async with to_app_send, to_app, from_app_send, from_app, anyio.create_task_group() as tg:
        tg.start_soon(run_app)
        with anyio.fail_after(timeout):
            await to_app_send.send({"type": "lifespan.startup"})
            started = await from_app.receive()
        if started["type"] != "lifespan.startup.complete":
            failed = str(started.get("message", started["type"]))
        else:
            try:
                yield
            finally:
                with anyio.fail_after(timeout, shield=True):
                    await to_app_send.send({"type": "lifespan.shutdown"})
                    await from_app.receive()
    if failed is not None:  # raised outside the task group: the caller gets the error itself
        raise RuntimeError(f"lifespan startup failed: {failed}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: ASGIApp, *, timeout: float = 10.0, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve `app` with a real uvicorn server on `host` (another loopback address: another "machine");
    yields its base URL."""
    import uvicorn

    port = free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(timeout):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True


# --- raw Streamable HTTP, for tests that need control of headers ---------------------------------
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def initialize_request(client: str = "test-client", version: str = "1.0", *, request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY_VERSION,
            "capabilities": {},
            "clientInfo": {"name": client, "version": version},
        },
    }


def tool_call(name: str, arguments: Mapping[str, Any], *, request_id: int = 2) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": dict(arguments)},
    }


def session_headers(session_id: str | None, *, protocol_version: str = LEGACY_VERSION) -> dict[str, str]:
    headers = {**ACCEPT, "mcp-protocol-version": protocol_version}
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    return headers
