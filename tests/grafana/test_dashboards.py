"""The committed dashboards: the generator's output, consistent, and naming only what a real run exports."""

from __future__ import annotations

import importlib.util
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mcp_registry.outcomes import Status
from mcp_registry.telemetry import ATTR_STATUS, SPAN_RESOLVE
from tests.integration.demo_stack import ScrapedDemo

from .dashboard_json import (
    GRAFANA_DIR,
    PROVISIONING_DIR,
    Json,
    all_queries,
    dashboard_files,
    load,
    panels,
    queries,
    referenced_variables,
    variables,
)

GRAFANA_GLOBAL_VARIABLES: Final = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__all", "__name"}
)
"""Variables Grafana itself defines (https://grafana.com/docs/grafana/latest/dashboards/variables/)."""
SCRAPE_LABELS: Final = frozenset({"job", "instance"})
"""Labels Prometheus attaches to every scraped (or OTLP-ingested) series; the app does not export them."""

_SELECTOR: Final = re.compile(r"([A-Za-z_:][\w:]*)\s*\{")
_MATCHER: Final = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING: Final = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES: Final = re.compile(r"label_values\((.*),\s*(\w+)\s*\)$")
_STRING: Final = re.compile(r'"[^"]*"')


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mcp_registry_grafana_generate", GRAFANA_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _provisioned_datasources() -> dict[str, str]:
    """uid -> plugin type of every provisioned datasource."""
    found: dict[str, str] = {}
    for path in sorted((PROVISIONING_DIR / "datasources").glob("*.yaml")):
        for datasource in yaml.safe_load(path.read_text())["datasources"]:
            found[datasource["uid"]] = datasource["type"]
    return found


def _datasource_refs(dashboard: Json) -> list[tuple[str, Json]]:
    refs = [(f"variable {name}", v["datasource"]) for name, v in variables(dashboard).items() if "datasource" in v]
    for panel in panels(dashboard):
        if "datasource" in panel:
            refs.append((f"panel {panel['id']}", panel["datasource"]))
        refs += [
            (f"panel {panel['id']} target", t["datasource"]) for t in panel.get("targets", []) if "datasource" in t
        ]
    return refs


DASHBOARDS: Final = dashboard_files()


def test_there_is_an_mcp_sessions_dashboard() -> None:
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert "MCP sessions" in titles


def test_committed_dashboards_are_exactly_the_generator_output() -> None:
    expected: dict[str, str] = _generator().rendered()
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS}
    assert committed == expected, "the dashboards are out of date: run `python grafana/generate.py`"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [panel["id"] for panel in panels(load(path))]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {sorted(ids)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_reference_resolves_to_a_provisioned_datasource(path: Path) -> None:
    dashboard = load(path)
    provisioned = _provisioned_datasources()
    defined = variables(dashboard)
    for where, ref in _datasource_refs(dashboard):
        uid, kind = ref.get("uid", ""), ref.get("type")
        if match := re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid):
            variable = defined.get(match.group(1) or match.group(2))
            assert variable is not None, f"{where}: {uid} is not defined"
            assert variable["type"] == "datasource", f"{where}: {uid} is no datasource variable"
            assert variable["query"] == kind, f"{where}: {uid} picks {variable['query']} datasources, not {kind}"
            uid = variable["current"]["value"]
        assert provisioned.get(uid) == kind, f"{where}: no provisioned {kind} datasource with uid {uid!r}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_variable_a_query_uses_is_defined(path: Path) -> None:
    dashboard = load(path)
    defined = set(variables(dashboard)) | GRAFANA_GLOBAL_VARIABLES
    texts = [str(q.target.get("expr") or q.target.get("query") or "") for q in queries(path)]
    texts += [str(v.get("query", "")) for v in variables(dashboard).values() if v["type"] == "query"]
    for text in texts:
        assert referenced_variables(text) <= defined, f"undefined variable in {text!r}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_filters_on_the_service_and_worker_variables(path: Path) -> None:
    for query in queries(path):
        if query.is_prometheus:
            assert {"job", "worker"} <= referenced_variables(query.expr), f"{query} ignores $job or $worker"


def test_the_trace_panel_finds_fabricated_resolve_spans() -> None:
    traceql = [str(q.target.get("query", "")) for q in all_queries() if q.datasource.get("type") == "tempo"]
    assert any(
        f'name = "{SPAN_RESOLVE}"' in query and f'span.{ATTR_STATUS} = "{Status.FABRICATED.value}"' in query
        for query in traceql
    ), traceql


# --- against a real export ---------------------------------------------------------------------
@dataclass
class Export:
    """Sample names and label values of a real run's Prometheus exposition, all workers together."""

    metrics: set[str] = field(default_factory=set)
    labels: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.metrics.add(sample.name)
                for name, value in sample.labels.items():
                    self.labels[name].add(value)

    def unknown_names(self, query: str) -> list[str]:
        """What `query` names that this export does not have: metrics, labels, label values."""
        problems = [f"metric {name}" for name in _SELECTOR.findall(query) if name not in self.metrics]
        for label, op, value in _MATCHER.findall(query):
            if label in SCRAPE_LABELS:
                continue
            if label not in self.labels:
                problems.append(f"label {label}")
            elif op in ("=", "!=") and value not in self.labels[label]:
                problems.append(f'value {label}="{value}"')
        grouped = [name.strip() for group in _GROUPING.findall(query) for name in group.split(",") if name.strip()]
        if match := _LABEL_VALUES.search(query):
            grouped.append(match.group(2))
        problems += [f"label {name}" for name in grouped if name not in self.labels and name not in SCRAPE_LABELS]
        # Every name of ours must be a selector or a label we checked above, never slip past the patterns.
        for token in re.findall(r"\bmcp_\w+", _STRING.sub('""', query)):
            if token not in self.metrics and token not in self.labels:
                problems.append(f"name {token}")
        return sorted(set(problems))


def _promql_texts() -> list[tuple[str, str]]:
    texts = [(str(q), q.expr) for q in all_queries() if q.is_prometheus]
    for path in DASHBOARDS:
        for name, variable in variables(load(path)).items():
            if variable["type"] == "query":
                texts.append((f"{path.name} variable {name}", str(variable["query"])))
    return texts


@pytest.fixture(scope="module")
def real_export() -> Export:
    wanted = {name for _, text in _promql_texts() for name in _SELECTOR.findall(text)}
    export = Export()
    with ScrapedDemo() as demo:
        demo.drive(duration=3.0)
        # Counters appear with their first event and histograms with the registry's first
        # flush: read until every name a query uses is there, or the deadline passes.
        deadline = time.monotonic() + 10.0
        while True:
            export = Export()
            for text in demo.scrape().values():
                export.add(text)
            if wanted <= export.metrics or time.monotonic() > deadline:
                return export
            time.sleep(0.2)  # between two reads of a bounded poll


@pytest.mark.integration
def test_every_query_names_only_metrics_labels_and_values_a_real_run_exports(real_export: Export) -> None:
    problems = {where: found for where, text in _promql_texts() if (found := real_export.unknown_names(text))}
    assert not problems, f"names the app does not export: {problems}"


@pytest.mark.integration
def test_the_names_check_catches_a_misspelt_metric(real_export: Export) -> None:
    query = 'sum by (mcp_registry_worker_id) (rate(mcp_registry_sesions_created_total{job=~"$job"}[5m]))'
    assert real_export.unknown_names(query) == [
        "metric mcp_registry_sesions_created_total",
        "name mcp_registry_sesions_created_total",
    ]
