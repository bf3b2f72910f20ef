"""Read the committed dashboard JSON the way Grafana does: panels (rows included), targets, variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
GRAFANA_DIR: Final = REPO / "grafana"
DASHBOARDS_DIR: Final = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR: Final = GRAFANA_DIR / "provisioning"

_VARIABLE: Final = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")

Json = dict[str, Any]


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    datasource: Json
    target: Json

    @property
    def is_prometheus(self) -> bool:
        return self.datasource.get("type") == "prometheus"

    @property
    def expr(self) -> str:
        return str(self.target.get("expr", ""))

    @property
    def instant(self) -> bool:
        return bool(self.target.get("instant")) and not self.target.get("range")

    def __str__(self) -> str:
        return f"{self.dashboard} panel {self.panel_id} ({self.panel_title!r}) query {self.ref_id}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load(path: Path) -> Json:
    document: Json = json.loads(path.read_text(encoding="utf-8"))
    return document


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: Json) -> dict[str, Json]:
    return {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}


def queries(path: Path) -> list[PanelQuery]:
    """Every target of every panel of the dashboard at `path` (a target's datasource wins over its panel's)."""
    found = []
    for panel in panels(load(path)):
        for target in panel.get("targets", []):
            found.append(
                PanelQuery(
                    dashboard=path.name,
                    panel_id=panel["id"],
                    panel_title=panel.get("title", ""),
                    ref_id=target.get("refId", ""),
                    datasource=target.get("datasource") or panel.get("datasource") or {},
                    target=target,
                )
            )
    return found


def all_queries() -> list[PanelQuery]:
    return [query for path in dashboard_files() for query in queries(path)]


def referenced_variables(text: str) -> set[str]:
    """Names of the template variables (`$name`, `${name}`, `${name:format}`) used in `text`."""
    return {braced or bare for braced, bare in _VARIABLE.findall(text)}
