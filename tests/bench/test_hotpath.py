"""The in-process hot-path measurement runs and reports every path and variant (no speed is asserted)."""

from __future__ import annotations

import pytest

from bench import hotpath


def test_it_reports_each_path_for_registry_off_and_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert hotpath.main(["--rounds", "1", "--requests", "50", "--sdk-requests", "5"]) == 0
    out = capsys.readouterr().out
    in_process, _, whole = out.partition("through the real SDK")
    rows = [line for line in in_process.splitlines() if line.startswith("| ") and "µs" not in line]
    sdk_rows = [line.split("|")[1].strip() for line in whole.splitlines() if line.startswith("| ") and "µs" not in line]
    assert sdk_rows == ["bare SDK", "registry off", "continuity on", "bare SDK again"]
    assert {(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows} == {
        (path, variant)
        for path in ("own session", "2026-07-28 (no session)", "no id, stateless manager")
        for variant in ("registry off", "registry on")
    }
