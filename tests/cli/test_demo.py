from __future__ import annotations

import pytest

from mcp_registry.cli import main


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--workers", "1"], "argument --workers: '1' is out of range: use 2 to 16"),
        (["--clients", "0"], "argument --clients: '0' is out of range: use 1 to 64"),
        (["--duration", "nan"], "argument --duration: 'nan' is out of range: use 1.0 to 3600.0"),
        (["--duration", "soon"], "argument --duration: 'soon' is not a number"),
    ],
)
def test_out_of_range_arguments_exit_2_with_one_line(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *args])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.splitlines() == [f"mcp-registry demo: error: {complaint}"]
