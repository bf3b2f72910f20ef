"""Generate the Grafana dashboards of mcp_registry from code (grafana-foundation-sdk).

    python grafana/generate.py            # write grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if a committed dashboard differs from the code

The dashboards read the metrics the way Prometheus stores them (the OpenTelemetry -> Prometheus
translation: dots become underscores, counters end in `_total`, seconds in `_seconds`). Every
query filters on two template variables: `$job` (the service: `service.name` becomes `job`)
and `$worker` (the `mcp_registry_worker_id` label). `tests/grafana/test_dashboards.py` checks
the metric names against a real export and `tests/integration/test_prometheus_dashboards.py`
runs every query against a real Prometheus.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import piechart, prometheus, stat, table, tempo, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.tempo import SearchTableType

DASHBOARDS_DIR: Final = Path(__file__).resolve().parent / "dashboards"

# Provisioned datasources (grafana/provisioning/datasources/) and the variables that pick them.
PROMETHEUS_UID: Final = "prometheus"
TEMPO_UID: Final = "tempo"
PROMETHEUS: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO: Final = DataSourceRef(type_val="tempo", uid="${traces}")

# Metric names as Prometheus stores them (see mcp_registry/telemetry.py for the OpenTelemetry names).
REUSE: Final = "mcp_registry_session_cross_worker_reuse_total"
LOOKUPS: Final = "mcp_registry_session_lookups_total"
REQUESTS: Final = "mcp_registry_requests_total"
CREATED: Final = "mcp_registry_sessions_created_total"
ENDED: Final = "mcp_registry_sessions_ended_total"
LIVE: Final = "mcp_registry_sessions_live"
LIFETIME_BUCKET: Final = "mcp_server_session_duration_seconds_bucket"
QUEUE_DEPTH: Final = "mcp_registry_queue_depth"
DROPPED: Final = "mcp_registry_queue_dropped_total"
REDIS_ERRORS: Final = "mcp_registry_redis_errors_total"
REDIS_DURATION_BUCKET: Final = "mcp_registry_redis_duration_seconds_bucket"
REDIS_DURATION_COUNT: Final = "mcp_registry_redis_duration_seconds_count"
BATCH_SIZE_SUM: Final = "mcp_registry_writer_batch_size_sum"
BATCH_SIZE_COUNT: Final = "mcp_registry_writer_batch_size_count"

FORWARD_FAILURES: Final = "mcp_registry_forward_failures_total"
FORWARD_SERVED: Final = "mcp_registry_forward_served_total"
FORWARD_REFUSED: Final = "mcp_registry_forward_refused_total"
CLIENT_REQUESTS: Final = "mcp_registry_client_requests_total"
CLIENT_LOST: Final = "mcp_registry_client_sessions_lost_total"
ADOPTED: Final = "mcp_registry_sessions_adopted_total"
TAKEOVER_FAILURES: Final = "mcp_registry_takeover_failures_total"

WORKER: Final = "mcp_registry_worker_id"
ORIGIN: Final = "mcp_registry_session_origin_worker"
STATUS: Final = "mcp_registry_session_status"
LEGITIMATE: Final = "mcp_registry_session_legitimate"
ACTION: Final = "mcp_registry_session_action"
ERA: Final = "mcp_registry_protocol_era"
CLIENT_NAME: Final = "mcp_registry_client_name"
CLIENT_VERSION: Final = "mcp_registry_client_version"
END_REASON: Final = "mcp_registry_session_end_reason"
DROP_REASON: Final = "mcp_registry_drop_reason"
FORWARD_FAILURE: Final = "mcp_registry_forward_failure"
FORWARD_REFUSAL: Final = "mcp_registry_forward_refusal"
ADOPT_REASON: Final = "mcp_registry_takeover_reason"
TAKEOVER_FAILURE: Final = "mcp_registry_takeover_failure"
FROM_WORKER: Final = "mcp_registry_forward_from_worker"
OPERATION: Final = "mcp_registry_redis_operation"
MISSING: Final = f'{STATUS}="missing"'
ID_CARRIED: Final = f'{STATUS}!="missing"'
"""Requests that carried an id (every classification but `missing`)."""
LEGIT: Final = f'{LEGITIMATE}="true"'
NOT_LEGIT: Final = f'{LEGITIMATE}="false", {ID_CARRIED}'
"""Ids this deployment never issued (fabricated, malformed); `missing` requests carry no id at all."""
LEGACY: Final = f'{ERA}="legacy"'

FABRICATED_TRACES: Final = (
    '{ name = "mcp_registry.session.resolve" && span.mcp_registry.session.status = "fabricated" }'
)

STATUS_COLORS: Final = {
    "cross_worker": "blue",
    "expired": "green",
    "fabricated": "red",
    "malformed": "orange",
    "unverified": "purple",
}


def sel(*extra: str) -> str:
    """The label matchers every query carries: the selected services and workers, plus `extra`."""
    return "{" + ", ".join(['job=~"$job"', f'{WORKER}=~"$worker"', *extra]) + "}"


def rate(metric: str, *extra: str, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{sel(*extra)}[{window}])"


def promql(
    ref: str, expr: str, legend: str = "__auto", *, instant: bool = False, table_format: bool = False
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().ref_id(ref).expr(expr).legend_format(legend).datasource(PROMETHEUS)
    query = query.instant() if instant else query.range()
    if table_format:
        query = query.format(PromQueryFormat.TABLE)
    return query


def color_override(name: str, color: str) -> tuple[str, list[DynamicConfigValue]]:
    return name, [DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def legend_table(*calcs: str) -> common_b.VizLegendOptions:
    return (
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calcs))
    )


def graph(
    title: str, description: str, *queries: prometheus.Dataquery, unit: str, stacked: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .fill_opacity(15 if stacked else 5)
        .line_width(1)
        .legend(legend_table("mean", "max", "lastNotNull"))
        .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
        .span(12)
        .height(8)
    )
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def single_stat(title: str, description: str, query: prometheus.Dataquery, *, unit: str) -> stat.Panel:
    """A 6-wide stat; "0" when the query has no series (the counters appear with their first event)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(query)
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value("0")
        .span(6)
        .height(8)
    )


# --- the panels, row by row ------------------------------------------------------------------
def reuse_row() -> Iterator[dash.Row | dash.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    yield dash.Row("Cross-worker reuse: requests that landed on a worker that did not issue their session")
    yield single_stat(
        "Cross-worker reuse rate",
        "Requests per second whose mcp-session-id was issued by another live worker of this deployment: "
        "a non-sticky load balancer moved the client. Each one fails for a legacy client unless the "
        "request is an initialize (stripped) or a DELETE (answered here).",
        promql("A", f"sum({rate(REUSE)})", "reuse"),
        unit="reqps",
    )
    yield single_stat(
        "Reuse share of session requests",
        "Cross-worker reuse as a share of all requests that carried an mcp-session-id (the worker's own "
        "sessions included). Near 1 - 1/N with N workers behind a round-robin balancer; near 0 when it is sticky.",
        promql("A", f"sum({rate(REUSE)}) / sum({rate(LOOKUPS)})", "share"),
        unit="percentunit",
    )
    yield graph(
        "Reuse rate and share over time, by serving worker",
        "Which workers receive requests for sessions they did not issue, and how that share moves "
        "(e.g. after a balancer or deployment change).",
        promql("A", f"sum by ({WORKER}) ({rate(REUSE)})", "reuse on {{" + WORKER + "}}"),
        promql(
            "B",
            f"sum by ({WORKER}) ({rate(REUSE)}) / sum by ({WORKER}) ({rate(LOOKUPS)})",
            "share on {{" + WORKER + "}}",
        ),
        unit="reqps",
    ).override_by_regexp(
        "^share on .*",
        [
            DynamicConfigValue(id_val="unit", value="percentunit"),
            DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )
    yield single_stat(
        "Cross-worker reuse in the time range",
        "Requests in the selected range that landed on a worker that did not issue their session.",
        promql("A", f"sum(increase({REUSE}{sel()}[$__range]))", "reuse"),
        unit="short",
    )
    yield (
        table.Panel()
        .title("Reuse matrix: origin worker → serving worker (requests in the time range)")
        .description(
            "Each row is a pair (the worker that issued the session, the worker that got a request for it) "
            "with the number of such requests in the selected time range. `mcp-registry audit` prints the "
            "same matrix from Redis."
        )
        .datasource(PROMETHEUS)
        .with_target(
            promql(
                "A",
                f"sum by ({ORIGIN}, {WORKER}) (increase({REUSE}{sel()}[$__range]))",
                instant=True,
                table_format=True,
            )
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {ORIGIN: 0, WORKER: 1, "Value": 2},
                    "renameByName": {ORIGIN: "origin worker", WORKER: "serving worker", "Value": "requests"},
                },
            )
        )
        .sort_by([common_b.TableSortByFieldState().display_name("requests").desc(True)])
        .decimals(0)
        .span(18)
        .height(8)
    )


def ids_row() -> Iterator[dash.Row | timeseries.Panel | stat.Panel]:
    not_local = f'{STATUS}!~"local|missing"'
    yield dash.Row("Session ids that were not the worker's own: legitimate, fabricated or malformed")
    yield (
        graph(
            "Legitimate vs fabricated vs malformed ids",
            "Requests whose id the serving worker did not own, by what the registry found it to be. "
            "Legitimate: issued by this deployment (another worker's live session, or one that ended). "
            "Fabricated: never issued within the retention window (a made-up or very old id). "
            "Malformed: not a valid id at all (empty, too long, bad characters, two values).",
            promql("A", f"sum({rate(LOOKUPS, not_local, LEGIT)})", "legitimate"),
            promql(
                "B",
                f"sum by ({STATUS}) ({rate(LOOKUPS, NOT_LEGIT)})",
                "{{" + STATUS + "}}",
            ),
            unit="reqps",
            stacked=True,
        )
        .override_by_name(*color_override("legitimate", "green"))
        .override_by_name(*color_override("fabricated", STATUS_COLORS["fabricated"]))
        .override_by_name(*color_override("malformed", STATUS_COLORS["malformed"]))
    )
    classification = graph(
        "Foreign ids by classification",
        "The same requests split by every classification, including `unverified` (the registry is off "
        "or Redis did not answer in time, so nobody could tell).",
        promql("A", f"sum by ({STATUS}) ({rate(LOOKUPS, not_local)})", "{{" + STATUS + "}}"),
        unit="reqps",
        stacked=True,
    )
    for status, color in STATUS_COLORS.items():
        classification = classification.override_by_name(*color_override(status, color))
    yield classification
    yield graph(
        "What the middleware did with them",
        "reject: the SDK answered 404 so a spec client starts over (policy `spec`); strip: the stale "
        "header was removed (initialize, stateless, or policy `strip`); ack_delete: a DELETE for a "
        "session this worker does not hold, answered 200 here.",
        promql("A", f"sum by ({ACTION}) ({rate(LOOKUPS, not_local)})", "{{" + ACTION + "}}"),
        unit="reqps",
        stacked=True,
    )
    yield single_stat(
        "Fabricated or malformed ids in the time range",
        "Requests carrying an id this deployment never issued. A steady trickle is clients with "
        "stale state after a long outage; a burst is someone guessing ids.",
        promql("A", f"sum(increase({LOOKUPS}{sel(NOT_LEGIT)}[$__range]))", "illegitimate"),
        unit="short",
    )
    yield single_stat(
        "Requests missing their session id",
        "Requests a stateful worker could only serve with an mcp-session-id but that carried none (not an "
        "initialize): the SDK answers 400. Above 0, a client or a gateway in front of the server drops the "
        "header (LiteLLM issue #25128): users will see empty tool lists before they report it.",
        promql("A", f"sum(increase({LOOKUPS}{sel(MISSING)}[$__range]))", "missing"),
        unit="short",
    )
    yield single_stat(
        "Share of foreign ids that were made up",
        "Fabricated and malformed ids as a share of all ids a worker did not own. Near 0 in a healthy "
        "deployment: foreign ids come from worker hops (cross_worker) and ended sessions (expired).",
        promql(
            "A",
            f"sum({rate(LOOKUPS, NOT_LEGIT)}) / sum({rate(LOOKUPS, not_local)})",
            "made-up share",
        ),
        unit="percentunit",
    )


def continuity_row() -> Iterator[dash.Row | timeseries.Panel | stat.Panel]:
    forwarded = f'{ACTION}="forward"'
    served = f'{STATUS}="cross_worker"'
    yield dash.Row("Continuity (MCP_SESSION_CONTINUITY=forward, adopt): requests served by their session's owner")
    yield single_stat(
        "Hops served by the owner",
        "Share of forwarded requests that the session's owner served (cross_worker). Below 100 %: owners "
        "gone (worker killed or scaled down), sessions that ended, timeouts — see the failures panel.",
        promql(
            "A",
            f"sum({rate(LOOKUPS, forwarded, served)}) / sum({rate(LOOKUPS, forwarded)})",
            "served",
        ),
        unit="percentunit",
    )
    yield single_stat(
        "Forwarded requests per second",
        "Requests that landed on a worker that did not hold their session and were forwarded to the one "
        "that does. With a balancer that routes by the id's host label, only hops inside a host remain.",
        promql("A", f"sum({rate(LOOKUPS, forwarded)})", "forwarded"),
        unit="reqps",
    )
    yield graph(
        "Forwarded, by owner → serving worker",
        "Who forwards to whom: the serving worker received the request, the origin worker owns the session "
        "and served it.",
        promql("A", f"sum by ({ORIGIN}, {WORKER}) ({rate(REUSE)})", "{{" + ORIGIN + "}} → {{" + WORKER + "}}"),
        unit="reqps",
    )
    yield graph(
        "Hops no owner served, by reason",
        "owner_gone: the owner's listener is not there (killed, scaled down, restarted) — the client got 404 and "
        "starts over; session_gone: the owner no longer holds the session; timeout: no response headers within "
        "MCP_SESSION_FORWARD_TIMEOUT (504); refused: the owner's listener refused the hop (clocks more than "
        "30 s apart); broken: the connection failed mid-answer; not_routed: the owner's app has no route for the "
        "path (its 404 was passed on).",
        promql("A", f"sum by ({FORWARD_FAILURE}) ({rate(FORWARD_FAILURES)})", "{{" + FORWARD_FAILURE + "}}"),
        unit="reqps",
        stacked=True,
    )
    yield graph(
        "Served for other workers (owner side)",
        "Forwarded requests each owner served, by the worker that forwarded them.",
        promql("A", f"sum by ({WORKER}, {FROM_WORKER}) ({rate(FORWARD_SERVED)})",
               "{{" + FROM_WORKER + "}} → {{" + WORKER + "}}"),
        unit="reqps",
    )
    yield graph(
        "Sessions saved by takeover, and sessions lost",
        "MCP_SESSION_CONTINUITY=adopt. Saved: sessions a worker took over because their owner was gone "
        "(owner_gone: crashed, killed, restarted) or shutting down (owner_draining: a deploy, a scale-down); "
        "the client noticed nothing. Lost: 404s to an id the registry knows (the session ended, or could not "
        "be taken over) — a client that does not start over breaks there. A deploy should show saved, never lost.",
        promql("A", f"sum by ({ADOPT_REASON}) ({rate(ADOPTED)})", "saved: {{" + ADOPT_REASON + "}}"),
        promql("B", f"sum({rate(CLIENT_LOST)})", "lost"),
        unit="short",
    )
    yield graph(
        "Sessions not taken over, by reason",
        "Owner gone, session not adopted: ended (the client DELETEd it, or it ended idle: a 404, as it must), "
        "not_adoptable (its handshake never reached Redis), principal_mismatch (another credential: 404), "
        "registry_unavailable and claimed_elsewhere (a retryable 503: the client's next try adopts it), "
        "replay_failed (the SDK refused the stored handshake).",
        promql("A", f"sum by ({TAKEOVER_FAILURE}) ({rate(TAKEOVER_FAILURES)})", "{{" + TAKEOVER_FAILURE + "}}"),
        unit="short",
        stacked=True,
    )
    yield graph(
        "Internal listener refusals",
        "Requests that reached a worker's internal listener without a valid hop from a worker of this "
        "deployment: missing (no hop header), malformed, bad_tag (wrong key or altered), stale (clock), "
        "replayed; not_here is an authentic hop for the process that listened there before (a restart: "
        "expected right after a deploy). Anything else but 0 deserves a look.",
        promql("A", f"sum by ({FORWARD_REFUSAL}) ({rate(FORWARD_REFUSED)})", "{{" + FORWARD_REFUSAL + "}}"),
        unit="reqps",
        stacked=True,
    )


def churn_row() -> Iterator[dash.Row | timeseries.Panel]:
    yield dash.Row("Session churn and lifetime")
    yield graph(
        "Sessions created per worker",
        "New sessions per second on each worker. Clients that re-initialize after every worker hop "
        "(a 404 on another worker) show up here as churn.",
        promql("A", f"sum by ({WORKER}) ({rate(CREATED)})", "{{" + WORKER + "}}"),
        unit="ops",
    )
    yield graph(
        "Sessions ended per worker, by reason",
        "deleted: the client sent DELETE; idle: the SDK closed it after its idle timeout; shutdown: the "
        "worker stopped while holding it; worker_lost: the worker died and its sessions aged out.",
        promql(
            "A",
            f"sum by ({WORKER}, {END_REASON}) ({rate(ENDED)})",
            "{{" + WORKER + "}} {{" + END_REASON + "}}",
        ),
        unit="ops",
    )
    yield graph(
        "Live sessions per worker",
        "Sessions each worker holds in memory now (each costs the worker about 38 KiB).",
        promql("A", f"sum by ({WORKER}) ({LIVE}{sel()})", "{{" + WORKER + "}}"),
        unit="short",
    )
    yield graph(
        "Session lifetime (p50, p90, p99)",
        "How long sessions lived before they ended (mcp.server.session.duration). Short lifetimes with "
        "high creation rates mean clients start over instead of keeping a session.",
        *(
            promql(
                ref,
                f"histogram_quantile({q}, sum by (le) ({rate(LIFETIME_BUCKET)}))",
                f"p{round(q * 100)}",
            )
            for ref, q in (("A", 0.5), ("B", 0.9), ("C", 0.99))
        ),
        unit="s",
    )


def eras_row() -> Iterator[dash.Row | timeseries.Panel | stat.Panel | piechart.Panel]:
    yield dash.Row("Protocol eras: who still depends on sessions")
    yield single_stat(
        "Legacy (session-based) share of requests",
        "Requests from clients on protocol revisions 2024-11-05 to 2025-11-25, which use mcp-session-id, "
        "as a share of all requests. The rest speak 2026-07-28 (sessionless) and are immune to worker hops.",
        promql(
            "A",
            f"sum({rate(REQUESTS, LEGACY)}) / sum({rate(REQUESTS)})",
            "legacy share",
        ),
        unit="percentunit",
    )
    yield (
        piechart.Panel()
        .title("Requests by protocol era (time range)")
        .description("legacy: session-based revisions (2024-11-05 … 2025-11-25); modern: 2026-07-28 and later.")
        .datasource(PROMETHEUS)
        .with_target(
            promql("A", f"sum by ({ERA}) (increase({REQUESTS}{sel()}[$__range]))", "{{" + ERA + "}}", instant=True)
        )
        .unit("short")
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .span(6)
        .height(8)
    )
    yield graph(
        "Requests by protocol era",
        "Requests per second by era, all workers. Watch the legacy line go to zero before switching "
        "the deployment to stateless.",
        promql("A", f"sum by ({ERA}) ({rate(REQUESTS)})", "{{" + ERA + "}}"),
        unit="reqps",
        stacked=True,
    )
    yield graph(
        "Clients still on sessions",
        "Requests per second of each client that still speaks a session-based revision (name and version "
        "from its initialize; at most 256 per worker, the rest as other). When every line is gone the "
        "stateful path can be switched off; `mcp-registry audit` lists them with sessions lost and last seen.",
        promql(
            "A",
            f"sum by ({CLIENT_NAME}, {CLIENT_VERSION}) ({rate(CLIENT_REQUESTS, LEGACY)})",
            "{{" + CLIENT_NAME + "}} {{" + CLIENT_VERSION + "}}",
        ),
        unit="reqps",
        stacked=True,
    )


def health_row() -> Iterator[dash.Row | timeseries.Panel]:
    yield dash.Row("Registry health (MCP_SESSION_REGISTRY=1)")
    yield graph(
        "Background queue depth",
        "Events waiting to be written to Redis on each worker. It should stay near zero; a queue that "
        "fills up drops events (next panel) and never blocks a request.",
        promql("A", f"max by ({WORKER}) ({QUEUE_DEPTH}{sel()})", "{{" + WORKER + "}}"),
        unit="short",
    )
    yield graph(
        "Events dropped instead of recorded",
        "Registry events lost per second, by worker and reason (queue full, Redis unavailable, lookups "
        "over the rate limit). Requests are unaffected; the audit undercounts by this much.",
        promql(
            "A",
            f"sum by ({WORKER}, {DROP_REASON}) ({rate(DROPPED)})",
            "{{" + WORKER + "}} {{" + DROP_REASON + "}}",
        ),
        unit="ops",
    )
    yield graph(
        "Redis errors",
        "Failed registry round trips to Redis per second, by worker and operation. The registry "
        "reconnects by itself; what it could not write is counted as dropped.",
        promql(
            "A",
            f"sum by ({WORKER}, {OPERATION}) ({rate(REDIS_ERRORS)})",
            "{{" + WORKER + "}} {{" + OPERATION + "}}",
        ),
        unit="ops",
    )
    yield graph(
        "Redis round-trip latency (p50, p99)",
        "Time of one pipelined registry batch to Redis. The request path never waits on it.",
        *(
            promql(ref, f"histogram_quantile({q}, sum by (le) ({rate(REDIS_DURATION_BUCKET)}))", f"p{round(q * 100)}")
            for ref, q in (("A", 0.5), ("B", 0.99))
        ),
        unit="s",
    )
    yield graph(
        "Redis round trips and batch size",
        "Round trips per second per worker (work per session and per interval, not per request) and the "
        "mean number of events written per batch.",
        promql("A", f"sum by ({WORKER}) ({rate(REDIS_DURATION_COUNT)})", "round trips {{" + WORKER + "}}"),
        promql(
            "B",
            f"sum by ({WORKER}) ({rate(BATCH_SIZE_SUM)}) / sum by ({WORKER}) ({rate(BATCH_SIZE_COUNT)})",
            "events per batch {{" + WORKER + "}}",
        ),
        unit="ops",
    ).override_by_regexp(
        "^events per batch .*",
        [
            DynamicConfigValue(id_val="unit", value="short"),
            DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )


def traces_row() -> Iterator[dash.Row | table.Panel]:
    yield dash.Row("Traces")
    yield (
        table.Panel()
        .title("Fabricated ids: mcp_registry.session.resolve spans")
        .description(
            "Spans of requests whose id was never issued by this deployment (TraceQL on Tempo). Open one "
            "to see the serving worker, the action taken and the keyed hash of the id (never the id)."
        )
        .datasource(TEMPO)
        .with_target(
            tempo.TempoQuery()
            .ref_id("A")
            .datasource(TEMPO)
            .query_type("traceql")
            .query(FABRICATED_TRACES)
            .limit(20)
            .table_type(SearchTableType.TRACES)
        )
        .span(24)
        .height(9)
    )


# --- the dashboard -------------------------------------------------------------------------
def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    return [
        dash.DatasourceVariable("datasource")
        .label("Metrics")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Prometheus", value=PROMETHEUS_UID)),
        dash.DatasourceVariable("traces")
        .label("Traces")
        .type("tempo")
        .current(VariableOption(selected=True, text="Tempo", value=TEMPO_UID)),
        dash.QueryVariable("job")
        .label("Service")
        .description("The OpenTelemetry service.name of the app (Prometheus label `job`).")
        .datasource(PROMETHEUS)
        .query(f"label_values({REQUESTS}, job)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all")),
        dash.QueryVariable("worker")
        .label("Worker")
        .description(
            "The worker that served the requests (MCP_SESSION_REGISTRY_WORKER_ID; label mcp_registry_worker_id)."
        )
        .datasource(PROMETHEUS)
        .query(f'label_values({REQUESTS}{{job=~"$job"}}, {WORKER})')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all")),
    ]


def mcp_sessions() -> dash.Dashboard:
    """The "MCP sessions" dashboard."""
    board = (
        dash.Dashboard("MCP sessions")
        .uid("mcp-registry-sessions")
        .description(
            "Cross-worker reuse, session churn, made-up ids, protocol eras and registry health of MCP "
            "Streamable HTTP servers wrapped by mcp_registry."
        )
        .tags(["mcp", "mcp_registry"])
        .timezone("browser")
        .time("now-30m", "now")
        .refresh("10s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .variables(list(variables()))
    )
    ids = itertools.count(1)
    for row in (reuse_row(), ids_row(), continuity_row(), churn_row(), eras_row(), health_row(), traces_row()):
        for item in row:
            if isinstance(item, dash.Row):
                board = board.with_row(item.id(next(ids)))
            else:
                board = board.with_panel(item.id(next(ids)))
    return board


DASHBOARDS: Final = {"mcp-sessions.json": mcp_sessions}


def render(builder: dash.Dashboard) -> str:
    """The dashboard as the JSON text we commit (stable key order, trailing newline)."""
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = DASHBOARDS_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run: python grafana/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
