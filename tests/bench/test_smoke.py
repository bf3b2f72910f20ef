"""`python -m bench --quick` runs the whole benchmark in a tiny configuration and writes every table.

Nothing here asserts a speed: the numbers of a few one-second windows mean nothing. What must
hold is that the machinery works — real uvicorn workers, a real redis-server, wrk — and that the
report has every column, a row per variant, and leaves the prose around its markers alone.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIDE_BY_SIDE_COLUMNS = [
    "scenario", "variant", "req/s", "×bare", "p50 ms", "×bare", "p99 ms", "×bare", "CPU µs/req", "×bare",
    "Redis cmd/req", "RSS MiB", "×bare", "failed",
]
RSS_COLUMNS = [
    "variant", "sessions open", "RSS before MiB", "RSS after MiB", "×bare", "KiB per session",
    "session keys in Redis",
]
HOP_COLUMNS = ["traffic", "req/s", "×pinned", "p50 ms", "p99 ms", "CPU µs/req (all workers)", "×pinned"]
SCALE_COLUMNS = [
    "Redis", "live sessions", "workers", "session keys", "Redis memory Δ", "bytes per session",
    "`mcp-registry audit --json` s", "audit reader alone ms", "audit's `live`",
]

pytestmark = pytest.mark.integration


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{binary} is required under CI=true and is not installed")
        pytest.skip(f"{binary} is not installed")


def _section(text: str, name: str) -> str:
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    assert text.count(begin) == 1, f"{begin} must appear exactly once"
    return text.split(begin, 1)[1].split(end, 1)[0]


def _tables(section: str) -> list[list[list[str]]]:
    """Every Markdown table of a section, as rows of stripped cells (separator rows left out)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-:") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _numbers(row: list[str]) -> list[float]:
    values = []
    for cell in row:
        head = cell.split(" ")[0].replace(",", "")
        try:
            values.append(float(head))
        except ValueError:
            continue
    return values


@pytest.mark.timeout(300)
def test_quick_run_writes_both_tables_with_every_column(tmp_path: Path) -> None:
    _require("redis-server")
    _require("redis-cli")
    _require("wrk")
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro prose\n\n<!-- bench:results:begin -->\nstale table\n<!-- bench:results:end -->\n\nclosing prose\n"
    )

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--readme", str(readme)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    text = readme.read_text()
    assert text.startswith("intro prose\n")
    assert "closing prose" in text
    assert "stale table" not in text

    results = _section(text, "results")
    assert "Command: `python -m bench --quick" in results
    assert "nproc" in results
    side_by_side, rss, targets = _tables(results)
    assert side_by_side[0] == SIDE_BY_SIDE_COLUMNS
    rows = side_by_side[1:]
    assert [row[1] for row in rows] == [
        "bare SDK", "registry off", "registry on", "continuity on", "takeover on (registry on)",
        "pass-through middleware (floor)", "bare SDK again (A/A control)",
    ] * 2
    for row in rows:
        assert len(row) == len(SIDE_BY_SIDE_COLUMNS)
        assert "nan" not in row
        assert row[-1] == "0", f"requests failed in {row}"
        assert _numbers(row[2:4])[0] > 0, f"no throughput in {row}"
    assert rows[2][SIDE_BY_SIDE_COLUMNS.index("Redis cmd/req")] != "—"  # measured when the registry is on
    commands = next(line for line in results.splitlines() if line.startswith("- stateful@1: "))
    assert "`SET` " in commands  # the registry wrote the sessions it saw opened

    assert rss[0] == RSS_COLUMNS
    assert [row[0] for row in rss[1:]] == [
        "bare SDK", "registry off", "registry on", "continuity on", "takeover on (registry on)"
    ]
    assert rss[3][1] == "100"  # every initialize opened a session
    assert rss[3][-1] == "100"  # and the registry recorded each one in Redis
    assert targets[0] == ["target", "measured (median)", "verdict"]
    assert all(row[2] in ("met", "**missed**") for row in targets[1:] if not row[0].startswith("("))
    assert any(row[0].startswith("(noise floor)") for row in targets[1:])
    assert any(row[0].startswith("takeover (adopt) on vs continuity off") for row in targets[1:])

    hops = _section(text, "continuity")
    hop_table, hop_targets = _tables(hops)
    assert hop_table[0] == HOP_COLUMNS
    assert [row[0] for row in hop_table[1:]] == [
        "pinned to the owner", "hopped over a Unix socket (same host, the default)",
        "hopped over TCP loopback (as between hosts)", "pinned again (A/A control)",
        "plain asyncio loop: pinned to the owner", "plain asyncio loop: hopped over TCP loopback",
    ]
    for row in hop_table[1:]:
        assert all(math.isfinite(x) and x > 0 for x in _numbers(row[1:]))
    assert all(row[2] in ("met", "**missed**") for row in hop_targets[1:])

    scale = _section(text, "scale")
    sizes, writes, scale_targets = _tables(scale)
    assert sizes[0] == SCALE_COLUMNS
    assert [row[:2] for row in sizes[1:]] == [
        ["one node", "1,000"], ["one node", "5,000"], ["cluster, 3 masters", "1,000"], ["cluster, 3 masters", "5,000"],
    ]
    for row in sizes[1:]:
        assert row[3] == row[1], "every simulated session is a key in Redis (on the cluster: summed over masters)"
        assert row[-1] == row[1], "the audit counts every live session"
    assert writes[0] == ["writes", "one node", "cluster, 3 masters", "× one node"]
    for row in writes[1:]:
        assert all(math.isfinite(x) and x > 0 for x in _numbers(row[1:])), row
    assert "events/s" in scale
    assert "sessions/s" in scale
    assert [row[0].split(" (")[0].split(" B")[0] for row in scale_targets[1:]] == [
        "one node: ≤ 200", "one node: audit time flat from 1,000 to 5,000 sessions",
        "cluster, 3 masters: ≤ 200", "cluster, 3 masters: audit time flat from 1,000 to 5,000 sessions",
    ]
