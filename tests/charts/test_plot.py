"""``harness plot RUN [-o FILE]``: the run's chart as a PNG file; one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import mistakes as ml
from harness.cli.main import main
from tests.charts.conftest import add_run, check_png


@pytest.fixture
def run_id(home: Path) -> str:
    with ml.open_log(home / "harness.db") as store:
        return add_run(store, home / "runs" / "echo-1").id


def test_plot_writes_the_chart_by_prefix(
    run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chart.png"
    assert main(["plot", run_id[:8], "-o", str(out)]) == 0
    assert check_png(out.read_bytes()) == (800, 500)
    said = capsys.readouterr().out
    assert str(out) in said and run_id in said


def test_plot_names_the_file_after_the_run_by_default(
    run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "last"]) == 0
    check_png((tmp_path / f"{run_id}.png").read_bytes())


def test_plot_an_unknown_run_is_one_line(run_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and "nope" in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["missing-dir/chart.png", "."])
def test_plot_to_a_file_it_cannot_write_is_one_line(
    run_id: str, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / where
    assert main(["plot", run_id, "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: error: cannot write") and err.count("\n") == 1
    assert not list(tmp_path.glob("**/.*.tmp"))  # no half-written file left behind
