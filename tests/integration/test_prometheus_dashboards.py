"""Every panel query of every dashboard against a real Prometheus that scrapes real workers under traffic.

A real `prometheus` (Debian package) scrapes each worker process of the demo every second while
the demo traffic runs through the non-sticky balancer. Then every Prometheus query of every
panel runs through Prometheus's HTTP API the way Grafana would send it (range or instant, the
template variables at their default "All", `$__rate_interval` as Grafana derives it from a 1 s
scrape interval) and must return data; and the cross-worker reuse Prometheus counted must be
exactly what `mcp-registry audit --json` reads from Redis for the same run.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
import pytest
import yaml

from mcp_registry.demo import _process
from tests.conftest import require
from tests.grafana.dashboard_json import PanelQuery, all_queries, dashboard_files, load, variables
from tests.integration.demo_stack import DEGRADED_WORKER, JOB, PREFIX, ScrapedDemo

pytestmark = pytest.mark.integration

SCRAPE_SECONDS: Final = 1
STEP_SECONDS: Final = 1
TRAFFIC_SECONDS: Final = 6.0
SETTLE_SECONDS: Final = 20.0
RATE_INTERVAL: Final = f"{max(4 * SCRAPE_SECONDS, STEP_SECONDS + SCRAPE_SECONDS)}s"
"""Grafana's `$__rate_interval`: max(4 x scrape interval, step + scrape interval)."""
REUSE_BY_PAIR: Final = (
    f"sum by (mcp_registry_session_origin_worker, mcp_registry_worker_id) "
    f'(mcp_registry_session_cross_worker_reuse_total{{job="{JOB}", mcp_registry_worker_id=~"worker-.*"}})'
)
"""The balanced pair's reuse (the takeover pair writes under a prefix of its own, which the audit does not read)."""

Matrix = dict[tuple[str, str], int]


class PrometheusServer:
    """A real `prometheus` on a free 127.0.0.1 port scraping `targets` every second, stopped on exit."""

    def __init__(self, targets: list[str], *, job: str) -> None:
        self.targets = targets
        self.job = job
        self.port = _process.free_ports(1)[0]
        self._dir = tempfile.TemporaryDirectory(prefix="mcp-registry-prometheus-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        root = Path(self._dir.name)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS}s"},
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        args = [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        self._proc = _process.spawn(args, env={}, log_path=root / "prometheus.log")
        try:
            _process.wait_ready(
                self._proc, self._ready, timeout=30.0, what="prometheus", log_path=root / "prometheus.log"
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            _process.terminate(self._proc, timeout=10.0)
        self._dir.cleanup()

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/-/ready", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr, time=f"{at:.3f}")["result"]
        return result

    def range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{STEP_SECONDS}s"
        )["result"]
        return result


@dataclass(frozen=True)
class Run:
    prometheus: PrometheusServer
    demo: ScrapedDemo
    started: float
    ended: float
    audit: dict[str, Any]

    def substitute(self, query: PanelQuery) -> str:
        """The query text Grafana would send: variables at "All", Grafana's interval variables filled in."""
        defined = variables(load(next(p for p in dashboard_files() if p.name == query.dashboard)))
        text = query.expr
        for name, variable in defined.items():
            if variable["type"] == "query":
                text = re.sub(rf"\$\{{{name}(?::\w+)?\}}|\${name}\b", variable["allValue"], text)
        range_seconds = math.ceil(self.ended - self.started)
        intervals = {"__rate_interval": RATE_INTERVAL, "__interval": f"{STEP_SECONDS}s", "__range": f"{range_seconds}s"}
        for name, value in intervals.items():
            text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return text


def _audit(redis_url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--json", "--since", "30m", "--url", redis_url,
         "--prefix", PREFIX],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def _audit_matrix(audit: dict[str, Any]) -> Matrix:
    return {(row["origin"], row["serving"]): row["count"] for row in audit["cross_worker_reuse"]}


def _prometheus_matrix(prometheus: PrometheusServer, at: float) -> Matrix:
    return {
        (s["metric"]["mcp_registry_session_origin_worker"], s["metric"]["mcp_registry_worker_id"]): round(
            float(s["value"][1])
        )
        for s in prometheus.instant(REUSE_BY_PAIR, at)
    }


def _has_a_finite_value(result: list[dict[str, Any]]) -> bool:
    values = [s["value"] for s in result if "value" in s] + [v for s in result for v in s.get("values", [])]
    return any(math.isfinite(float(value)) for _, value in values)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    require(shutil.which("prometheus") is not None, "prometheus (Debian package, on PATH)")
    with ScrapedDemo() as demo, PrometheusServer(demo.targets, job=JOB) as prometheus:
        _wait_until_scraped(prometheus, demo.targets)
        started = time.time()
        demo.drive(duration=TRAFFIC_SECONDS)
        # The registry writes its reuse counters to Redis every refresh interval and Prometheus
        # scrapes every second: poll (bounded) until both have seen the end of the traffic.
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            now = time.time()
            audit = _audit(demo.redis_url)
            if _audit_matrix(audit) == _prometheus_matrix(prometheus, now) or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # between two reads of a bounded poll
        yield Run(prometheus=prometheus, demo=demo, started=started, ended=now, audit=audit)


def _wait_until_scraped(prometheus: PrometheusServer, targets: list[str]) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        up = prometheus.instant(f'up{{job="{JOB}"}} == 1', time.time())
        if {s["metric"]["instance"] for s in up} == set(targets):
            return
        time.sleep(0.2)  # between two reads of a bounded poll
    pytest.fail(f"Prometheus did not scrape every worker within 15 s: {targets}")


PROMETHEUS_QUERIES: Final = [q for q in all_queries() if q.is_prometheus]


def test_there_are_panel_queries_to_run() -> None:
    assert len(PROMETHEUS_QUERIES) >= 20


@pytest.mark.parametrize("query", PROMETHEUS_QUERIES, ids=str)
def test_every_panel_query_returns_data(run: Run, query: PanelQuery) -> None:
    expr = run.substitute(query)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    if query.instant:
        result = run.prometheus.instant(expr, run.ended)
    else:
        result = run.prometheus.range(expr, run.started, run.ended)
    assert _has_a_finite_value(result), f"{query}: no data for\n{expr}\n{result}"


def test_the_template_variables_list_the_service_and_every_worker(run: Run) -> None:
    for path in dashboard_files():
        defined = variables(load(path))
        values = {}
        for name in ("job", "worker"):
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", defined[name]["query"])
            assert match is not None, defined[name]["query"]
            selector = re.sub(r"\$\{?job\}?", defined["job"]["allValue"], match.group(1))
            values[name] = set(
                run.prometheus.api(
                    f"label/{match.group(2)}/values", **{"match[]": selector},
                    start=f"{run.started:.3f}", end=f"{run.ended:.3f}",
                )
            )  # fmt: skip
        assert values["job"] == {JOB}
        assert values["worker"] == {"worker-0", "worker-1", DEGRADED_WORKER, "takeover-0", "takeover-1"}


def test_prometheus_and_the_audit_agree_on_cross_worker_reuse(run: Run) -> None:
    from_prometheus = _prometheus_matrix(run.prometheus, run.ended)
    from_audit = _audit_matrix(run.audit)
    assert from_audit, "the traffic produced no cross-worker reuse: nothing to compare"
    assert from_prometheus == from_audit


def test_the_reuse_matrix_panel_shows_the_pairs_the_audit_reports(run: Run) -> None:
    matrix_panels = [q for q in PROMETHEUS_QUERIES if q.panel_title.startswith("Reuse matrix")]
    assert matrix_panels
    for query in matrix_panels:
        rows = run.prometheus.instant(run.substitute(query), run.ended)
        pairs = {
            (r["metric"]["mcp_registry_session_origin_worker"], r["metric"]["mcp_registry_worker_id"]) for r in rows
        }
        balanced = {pair for pair in pairs if pair[1].startswith("worker-")}  # (the takeover pair has its own prefix)
        assert balanced == set(_audit_matrix(run.audit))
        assert pairs - balanced, "and the takeover pair's reuse is on the panel too"
