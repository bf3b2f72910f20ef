"""The span export path over the wire: a real worker exports OTLP/HTTP to a receiver in this test.

The receiver decodes the protobuf `ExportTraceServiceRequest` bodies, so what is asserted is
what a collector (or Tempo) would get: the `mcp_registry.session.resolve` span of a request
with a made-up id says `fabricated`, that of a malformed id says `malformed`, both are not
legitimate, and neither raw id appears in any attribute.
"""

from __future__ import annotations

import gzip
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from mcp_registry.demo.cluster import WorkerCluster
from mcp_registry.demo.redis_server import RedisServer
from mcp_registry.env import ENV_REGISTRY, ENV_URL
from mcp_registry.outcomes import Status
from mcp_registry.telemetry import ATTR_ACTION, ATTR_ID_HASH, ATTR_LEGITIMATE, ATTR_STATUS, ATTR_WORKER_ID, SPAN_RESOLVE

pytestmark = pytest.mark.integration

SERVICE: Final = "mcp-registry-otlp-test"
LEGACY_HEADERS: Final = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}
CALL: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    found = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (POST /v1/traces, protobuf), in a thread of this test."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(ReceivedSpan(span.name, _attributes(span.attributes), resource))

    def _handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        accept = self._accept

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                accept(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _resolve_spans_by_status(receiver: OtlpReceiver) -> dict[str, ReceivedSpan]:
    return {str(s.attributes.get(ATTR_STATUS)): s for s in receiver.received() if s.name == SPAN_RESOLVE}


def test_resolve_spans_say_fabricated_or_malformed_and_never_carry_the_raw_id(
    redis_server: RedisServer, worker_cluster: Callable[..., WorkerCluster]
) -> None:
    made_up = secrets.token_hex(16)
    malformed = f"not a session id {secrets.token_hex(8)}"  # spaces are outside visible ASCII
    with OtlpReceiver() as receiver:
        cluster = worker_cluster(
            1,
            env={
                ENV_REGISTRY: "1",
                ENV_URL: redis_server.url,
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_METRICS_EXPORTER": "none",
            },
        )
        with httpx.Client(base_url=cluster.urls[0], timeout=5.0) as client:
            for session_id in (made_up, malformed):
                response = client.post("/mcp", json=CALL, headers={**LEGACY_HEADERS, "mcp-session-id": session_id})
                assert response.status_code == 404, response.text  # the spec policy: start over
        deadline = time.monotonic() + 15.0
        wanted = {Status.FABRICATED.value, Status.MALFORMED.value}
        while not wanted <= set(_resolve_spans_by_status(receiver)) and time.monotonic() < deadline:
            time.sleep(0.1)  # between two reads of a bounded poll
        spans = _resolve_spans_by_status(receiver)
        everything = receiver.received()

    assert wanted <= set(spans), f"resolve spans received: {spans}"
    for status in wanted:
        span = spans[status]
        assert span.attributes[ATTR_LEGITIMATE] is False
        assert span.attributes[ATTR_WORKER_ID] == "worker-0"
        assert span.attributes[ATTR_ACTION] == "reject"
        assert span.resource["service.name"] == SERVICE
        assert span.resource["service.instance.id"] == "worker-0"
    assert spans[Status.FABRICATED.value].attributes[ATTR_ID_HASH], "a fabricated id is identified by its hash"
    for span in everything:
        for value in [*span.attributes.values(), *span.resource.values(), span.name]:
            assert made_up not in str(value), f"raw made-up id leaked in {span}"
            assert malformed not in str(value), f"raw malformed id leaked in {span}"
