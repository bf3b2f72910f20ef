"""Span and metric names in one place, and the one object that records them.

Everything goes through the OpenTelemetry API; the application (or `opentelemetry-instrument`)
configures the SDK and exporters. Counting on the request path is a plain integer increment
in `RequestStats`: the metrics that count requests are observable instruments that read those
integers when a reader collects, so no OpenTelemetry call is made per request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from mcp_registry.outcomes import Action, DropReason, EndReason, Era, Status

INSTRUMENTATION_NAME: Final = "mcp_registry"

# --- the span -------------------------------------------------------------------------------
SPAN_RESOLVE: Final = "mcp_registry.session.resolve"

ATTR_STATUS: Final = "mcp_registry.session.status"
ATTR_LEGITIMATE: Final = "mcp_registry.session.legitimate"
ATTR_ACTION: Final = "mcp_registry.session.action"
ATTR_ID_HASH: Final = "mcp_registry.session.id_hash"
ATTR_ORIGIN_WORKER: Final = "mcp_registry.session.origin_worker"
ATTR_WORKER_ID: Final = "mcp_registry.worker.id"
ATTR_END_REASON: Final = "mcp_registry.session.end_reason"
ATTR_ERA: Final = "mcp_registry.protocol.era"
ATTR_DROP_REASON: Final = "mcp_registry.drop.reason"
ATTR_OPERATION: Final = "mcp_registry.redis.operation"
ATTR_FORWARD_FAILURE: Final = "mcp_registry.forward.failure"
ATTR_FORWARD_REFUSAL: Final = "mcp_registry.forward.refusal"
ATTR_FORWARDED_BY: Final = "mcp_registry.forward.from_worker"
ATTR_CLIENT_NAME: Final = "mcp_registry.client.name"
ATTR_ADOPT_REASON: Final = "mcp_registry.takeover.reason"
ATTR_TAKEOVER_FAILURE: Final = "mcp_registry.takeover.failure"
ATTR_CLIENT_VERSION: Final = "mcp_registry.client.version"
ATTR_HOP_SECONDS: Final = "mcp_registry.forward.headers_seconds"
# OpenTelemetry semantic conventions (reused, not invented):
ATTR_RAW_SESSION_ID: Final = "mcp.session.id"
ATTR_PROTOCOL_VERSION: Final = "mcp.protocol.version"
ATTR_HTTP_METHOD: Final = "http.request.method"

# --- the metrics (units in UCUM; Prometheus adds _total / _seconds suffixes) -----------------
METRIC_SESSIONS_CREATED: Final = "mcp_registry.sessions.created"
METRIC_SESSIONS_ENDED: Final = "mcp_registry.sessions.ended"
METRIC_SESSIONS_LIVE: Final = "mcp_registry.sessions.live"
METRIC_SESSION_DURATION: Final = "mcp.server.session.duration"
METRIC_LOOKUPS: Final = "mcp_registry.session.lookups"
METRIC_REUSE: Final = "mcp_registry.session.cross_worker_reuse"
METRIC_REQUESTS: Final = "mcp_registry.requests"
METRIC_QUEUE_DEPTH: Final = "mcp_registry.queue.depth"
METRIC_QUEUE_DROPPED: Final = "mcp_registry.queue.dropped"
METRIC_REDIS_ERRORS: Final = "mcp_registry.redis.errors"
METRIC_REDIS_DURATION: Final = "mcp_registry.redis.duration"
METRIC_BATCH_SIZE: Final = "mcp_registry.writer.batch_size"
METRIC_FORWARD_FAILURES: Final = "mcp_registry.forward.failures"
METRIC_FORWARD_SERVED: Final = "mcp_registry.forward.served"
METRIC_FORWARD_REFUSED: Final = "mcp_registry.forward.refused"
METRIC_CLIENT_REQUESTS: Final = "mcp_registry.client.requests"
METRIC_ADOPTED: Final = "mcp_registry.sessions.adopted"
METRIC_TAKEOVER_FAILURES: Final = "mcp_registry.takeover.failures"
METRIC_CLIENT_LOST: Final = "mcp_registry.client.sessions_lost"

CLIENT_LABELS: Final = 256
"""Distinct clients a worker counts requests of; the rest count as `other` (client names are untrusted)."""
SESSION_DURATION_BUCKETS: Final = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                                   21600.0, 86400.0)
REDIS_OPERATIONS: Final = ("sessions", "lookup", "counters", "refresh", "key", "reap", "takeover")
REDIS_DURATION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)








@dataclass(slots=True)
class RequestStats:
    """Cumulative counts kept with plain integer increments; metrics and the registry read them."""

    legacy_requests: int = 0
    modern_requests: int = 0
    lookups: Counter[tuple[Status, Action]] = field(default_factory=Counter)
    reuse: Counter[str] = field(default_factory=Counter)
    """Cross-worker reuse seen on this worker, by origin worker."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Events the registry could not record, by reason."""
    local_requests: int = 0
    """Requests on this worker's own sessions (kept apart: it is the hot path)."""
    forward_failures: Counter[str] = field(default_factory=Counter)
    """Hops that did not reach a serving owner, by `ForwardFailure`."""
    served_for: Counter[str] = field(default_factory=Counter)
    """Forwarded requests this worker served as the owner, by forwarding worker."""
    hop_refusals: Counter[str] = field(default_factory=Counter)
    """Requests the internal listener refused, by `Refusal`."""
    # --- the migration view: who still needs sessions, per client --------------------------------
    session_requests: dict[str, int] = field(default_factory=dict)
    """Requests per own session since the last fold (the hot path adds 1; the runtime folds them into
    `client_requests` every second and when the session ends)."""
    session_hops: dict[str, int] = field(default_factory=dict)
    """Of those, requests another worker forwarded here (folded into `client_hops`)."""
    client_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Requests by (era, client name, client version): a legacy session's on its owner, a sessionless
    client's by its User-Agent product. Bounded: past `CLIENT_LABELS` clients the rest are `other`."""
    client_hops: Counter[tuple[str, str]] = field(default_factory=Counter)
    adopted: Counter[str] = field(default_factory=Counter)
    """Sessions this worker took over, by `AdoptReason`."""
    takeover_failures: Counter[str] = field(default_factory=Counter)
    """Sessions whose owner was gone that this worker could not adopt, by `TakeoverFailure`."""
    client_lost: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Sessions lost by client: a 404 to an id the registry knows (ended, or live on another worker)."""

    def count_client(self, counter: Counter[Any], key: Any, count: int = 1) -> None:
        """Add to a per-client counter, folding clients past `CLIENT_LABELS` into `other` (names are untrusted)."""
        if key not in counter and len(counter) >= CLIENT_LABELS - 1:  # one place kept for `other`
            key = (*key[:-2], "other", "other")
        counter[key] += count

    @property
    def requests(self) -> Counter[Era]:
        """Streamable HTTP requests by protocol era."""
        return Counter({Era.LEGACY: self.legacy_requests, Era.MODERN: self.modern_requests})

    def lookup_counts(self) -> Counter[tuple[Status, Action]]:
        counts = Counter(self.lookups)
        if self.local_requests:
            counts[(Status.LOCAL, Action.PASS)] += self.local_requests
        return counts


class Telemetry:
    """Creates the instruments once and records spans and metrics for one worker."""

    def __init__(
        self,
        *,
        worker_id: str,
        stats: RequestStats,
        live_sessions: Callable[[], int],
        queue_depth: Callable[[], int],
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.stats = stats
        self._worker_attr = {ATTR_WORKER_ID: worker_id}
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        self._created = meter.create_counter(
            METRIC_SESSIONS_CREATED, unit="{session}", description="Sessions this worker opened."
        )
        self._ended = meter.create_counter(
            METRIC_SESSIONS_ENDED, unit="{session}", description="Sessions that ended, by reason."
        )
        self._duration = meter.create_histogram(
            METRIC_SESSION_DURATION,
            unit="s",
            description="The duration of the MCP session as observed on the MCP server.",
            explicit_bucket_boundaries_advisory=list(SESSION_DURATION_BUCKETS),
        )
        self._dropped = meter.create_counter(
            METRIC_QUEUE_DROPPED, unit="{event}", description="Registry events dropped instead of recorded, by reason."
        )
        self._redis_errors = meter.create_counter(
            METRIC_REDIS_ERRORS, unit="{error}", description="Redis commands of the registry that failed."
        )
        self._redis_duration = meter.create_histogram(
            METRIC_REDIS_DURATION,
            unit="s",
            description="Time of one registry round trip to Redis (a pipelined batch).",
            explicit_bucket_boundaries_advisory=list(REDIS_DURATION_BUCKETS),
        )
        self._batch_size = meter.create_histogram(
            METRIC_BATCH_SIZE, unit="{event}", description="Events written to Redis in one pipelined batch."
        )
        # Health counters start at zero, so "no failures" reads as 0 on a dashboard, not as no data.
        for reason in DropReason:
            self._dropped.add(0, {**self._worker_attr, ATTR_DROP_REASON: reason})
        for operation in REDIS_OPERATIONS:
            self._redis_errors.add(0, {**self._worker_attr, ATTR_OPERATION: operation})
        meter.create_observable_counter(
            METRIC_REQUESTS, [self._observe_requests], unit="{request}",
            description="Streamable HTTP requests by protocol era (session-based legacy or sessionless modern).",
        )
        meter.create_observable_counter(
            METRIC_LOOKUPS, [self._observe_lookups], unit="{request}",
            description="Requests carrying an mcp-session-id, by what the id turned out to be and what was done.",
        )
        meter.create_observable_counter(
            METRIC_REUSE, [self._observe_reuse], unit="{request}",
            description="Requests on a session another worker issued, by origin and serving worker.",
        )
        meter.create_observable_gauge(
            METRIC_SESSIONS_LIVE, [lambda _: [Observation(live_sessions(), self._worker_attr)]],
            unit="{session}", description="Sessions this worker holds now.",
        )
        meter.create_observable_gauge(
            METRIC_QUEUE_DEPTH, [lambda _: [Observation(queue_depth(), self._worker_attr)]],
            unit="{event}", description="Events waiting in the registry's background queue.",
        )

        meter.create_observable_counter(
            METRIC_FORWARD_FAILURES, [self._observe_forward_failures], unit="{request}",
            description="Requests on another worker's session that could not be served by it, by reason.",
        )
        meter.create_observable_counter(
            METRIC_FORWARD_SERVED, [self._observe_served_for], unit="{request}",
            description="Forwarded requests this worker served as the session's owner, by forwarding worker.",
        )
        meter.create_observable_counter(
            METRIC_ADOPTED, [self._observe_adopted], unit="{session}",
            description="Sessions this worker took over because their owner was gone or shutting down, by reason.",
        )
        meter.create_observable_counter(
            METRIC_TAKEOVER_FAILURES, [self._observe_takeover_failures], unit="{session}",
            description="Sessions whose owner was gone that could not be adopted, by reason.",
        )
        meter.create_observable_counter(
            METRIC_CLIENT_REQUESTS, [self._observe_client_requests], unit="{request}",
            description="Requests by client and protocol era (legacy: on a session, by the client's initialize; "
            "modern: by its User-Agent product): who still needs sessions.",
        )
        meter.create_observable_counter(
            METRIC_CLIENT_LOST, [self._observe_client_lost], unit="{session}",
            description="Sessions lost by client: a 404 to an id the registry knows (ended, or live elsewhere).",
        )
        meter.create_observable_counter(
            METRIC_FORWARD_REFUSED, [self._observe_refusals], unit="{request}",
            description="Requests the internal listener refused (not forwarded by a worker of the deployment).",
        )

    # --- observable callbacks: read the integers the request path keeps -----------------------
    def _observe_requests(self, _: CallbackOptions) -> Iterable[Observation]:
        for era, count in self.stats.requests.items():
            yield Observation(count, {**self._worker_attr, ATTR_ERA: era.value})

    def _observe_forward_failures(self, _: CallbackOptions) -> Iterable[Observation]:
        for reason, count in self.stats.forward_failures.items():
            yield Observation(count, {**self._worker_attr, ATTR_FORWARD_FAILURE: reason})

    def start_forward_counters(self, failures: Iterable[str], refusals: Iterable[str]) -> None:
        """With continuity on, every failure and refusal reason reads 0 from the start (not "no data")."""
        for reason in failures:
            self.stats.forward_failures[reason] += 0
        for reason in refusals:
            self.stats.hop_refusals[reason] += 0

    def _observe_served_for(self, _: CallbackOptions) -> Iterable[Observation]:
        for sender, count in self.stats.served_for.items():
            yield Observation(count, {**self._worker_attr, ATTR_FORWARDED_BY: sender})

    def _observe_adopted(self, _: CallbackOptions) -> Iterable[Observation]:
        for reason, count in self.stats.adopted.items():
            yield Observation(count, {**self._worker_attr, ATTR_ADOPT_REASON: reason})

    def _observe_takeover_failures(self, _: CallbackOptions) -> Iterable[Observation]:
        for reason, count in self.stats.takeover_failures.items():
            yield Observation(count, {**self._worker_attr, ATTR_TAKEOVER_FAILURE: reason})

    def _observe_client_requests(self, _: CallbackOptions) -> Iterable[Observation]:
        for (era, name, version), count in list(self.stats.client_requests.items()):
            yield Observation(count, {**self._worker_attr, ATTR_ERA: era, ATTR_CLIENT_NAME: name,
                                      ATTR_CLIENT_VERSION: version})  # fmt: skip

    def _observe_client_lost(self, _: CallbackOptions) -> Iterable[Observation]:
        for (name, version), count in list(self.stats.client_lost.items()):
            yield Observation(count, {**self._worker_attr, ATTR_CLIENT_NAME: name, ATTR_CLIENT_VERSION: version})

    def _observe_refusals(self, _: CallbackOptions) -> Iterable[Observation]:
        for reason, count in self.stats.hop_refusals.items():
            yield Observation(count, {**self._worker_attr, ATTR_FORWARD_REFUSAL: reason})

    def _observe_lookups(self, _: CallbackOptions) -> Iterable[Observation]:
        for (status, action), count in self.stats.lookup_counts().items():
            attrs: dict[str, str | bool] = {**self._worker_attr, ATTR_STATUS: status.value, ATTR_ACTION: action.value}
            if (legit := status.legitimate) is not None:
                attrs[ATTR_LEGITIMATE] = legit
            yield Observation(count, attrs)

    def _observe_reuse(self, _: CallbackOptions) -> Iterable[Observation]:
        for origin, count in self.stats.reuse.items():
            yield Observation(count, {**self._worker_attr, ATTR_ORIGIN_WORKER: origin})

    # --- synchronous records (never on the hot path) ------------------------------------------
    def session_created(self) -> None:
        self._created.add(1, self._worker_attr)

    def session_ended(self, reason: EndReason, lifetime_seconds: float | None, count: int = 1) -> None:
        self._ended.add(count, {**self._worker_attr, ATTR_END_REASON: reason.value})
        if lifetime_seconds is not None:
            self._duration.record(lifetime_seconds, {**self._worker_attr, ATTR_END_REASON: reason.value})

    def dropped(self, reason: str, count: int = 1) -> None:
        self.stats.dropped[reason] += count
        self._dropped.add(count, {**self._worker_attr, ATTR_DROP_REASON: reason})

    def redis_round_trip(self, operation: str, seconds: float, batch: int, *, failed: bool) -> None:
        attrs = {**self._worker_attr, ATTR_OPERATION: operation}
        self._redis_duration.record(seconds, attrs)
        if failed:
            self._redis_errors.add(1, attrs)
        elif batch:
            self._batch_size.record(batch, attrs)

    # --- spans ---------------------------------------------------------------------------------
    def start_resolve_span(
        self, *, method: str, action: Action, protocol_version: str | None, start_time: int | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Span:
        """The span of a request whose id is not this worker's own; ended once it is classified.

        `attributes` known up front go in with the span's own (one call, not one per attribute).
        """
        merged: dict[str, AttributeValue] = {
            ATTR_WORKER_ID: self.worker_id,
            ATTR_ACTION: action.value,
            ATTR_HTTP_METHOD: method,
        }
        if protocol_version:
            merged[ATTR_PROTOCOL_VERSION] = protocol_version
        if attributes:
            merged.update(attributes)
        return self.tracer.start_span(SPAN_RESOLVE, kind=SpanKind.INTERNAL, attributes=merged, start_time=start_time)


def classification(status: Status, *, id_hash: str | None, origin: str | None = None,
                   raw_id: str | None = None) -> dict[str, AttributeValue]:
    """An id's classification as span attributes."""
    attributes: dict[str, AttributeValue] = {ATTR_STATUS: status.value}
    if (legit := status.legitimate) is not None:
        attributes[ATTR_LEGITIMATE] = legit
    if id_hash is not None:
        attributes[ATTR_ID_HASH] = id_hash
    if origin is not None:
        attributes[ATTR_ORIGIN_WORKER] = origin
    if raw_id is not None:
        attributes[ATTR_RAW_SESSION_ID] = raw_id
    return attributes


def annotate(span: Span, *, status: Status, id_hash: str | None, origin: str | None = None,
             raw_id: str | None = None) -> None:
    """Put an id's classification on a span (ours, or the request's current one)."""
    if span.is_recording():
        span.set_attributes(classification(status, id_hash=id_hash, origin=origin, raw_id=raw_id))

