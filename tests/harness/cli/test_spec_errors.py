"""Specs and config speak in one line: a missing working directory is a failed check (and
a refused, recorded launch), a value nested too deeply is one line naming the file and
key, a non-finite interval is one line; exit 2 for bad input, 1 for a failed check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import mistakes as ml
from harness.cli.main import main
from memory import list_runs


def spec_file(tmp_path: Path, extra: str, name: str = "job") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncommand = ["{sys.executable}", "-c", "pass"]\n{extra}')
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, never a traceback
    assert lines[0].startswith("harness: error: ")
    return lines[0]


def test_check_fails_a_spec_whose_cwd_does_not_exist(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir"
    spec = spec_file(tmp_path, f'cwd = "{missing}"\n')
    assert main(["check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  working directory: cwd '{missing}' does not exist" in out
    assert main(["check", str(spec), "--json"]) == 1
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert items["working directory"]["passed"] is False
    # a cwd that exists passes, and says where the job will run
    assert main(["check", str(spec_file(tmp_path, f'cwd = "{tmp_path}"\n')), "--json"]) in (0, 1)
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert items["working directory"] == {
        "name": "working directory",
        "passed": True,
        "evidence": str(tmp_path),
        "rule": None,
        "mistake_ids": [],
    }


def test_a_cwd_that_is_a_file_fails_the_check(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    assert main(["check", str(spec_file(tmp_path, f'cwd = "{tmp_path / "a-file"}"\n'))]) == 1
    assert "is not a folder" in capsys.readouterr().out


def test_run_refuses_a_missing_cwd_through_the_preflight_and_records_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone"
    spec = spec_file(tmp_path, f'cwd = "{missing}"\npreflight = [["{sys.executable}", "-V"]]\n')
    assert main(["run", str(spec), "--foreground"]) == 1
    assert "working directory: cwd" in capsys.readouterr().out
    with ml.open_log(home / "harness.db") as store, store.read() as s:
        (run,) = list_runs(session=s)
        incidents = ml.list_incidents(session=s, run_id=run.id)
    assert run.status == "failed"
    assert f"working directory: cwd '{missing}' does not exist" in run.summary
    assert [i.summary for i in incidents] == [f"working directory: cwd '{missing}' does not exist"]
    # the preflight commands were not run in a folder that is not there
    assert [c["name"] for c in run.result["checks"]] == [
        "stale processes",
        "RAM headroom",
        "command",
        "working directory",
    ]


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_spec_nested_too_deeply_is_one_line_and_exit_2(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    spec = spec_file(tmp_path, "[controls]\nw = " + "[" * 5000 + "]" * 5000 + "\n")
    assert main([command, str(spec)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{spec}: line 4: controls.w: nested too deeply" in line


@pytest.mark.parametrize("value", ["nan", "1e308", "[" * 5000 + "]" * 5000])
@pytest.mark.parametrize("command", [["config"], ["serve"], ["status"]])
def test_a_bad_interval_in_harness_toml_is_one_line_and_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str], value: str, command: list[str]
) -> None:
    home.mkdir(parents=True)
    (home / "harness.toml").write_text(f"[heartbeat]\ninterval_s = {value}\n")
    assert main(command) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{home / 'harness.toml'}: " in line and "interval_s" in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("w=" + "[" * 5000 + "]" * 5000, "w: nested too deeply to read"),
        ("w=" + "[" * 40 + "]" * 40, "w: nested more than 32 levels deep"),
        ("warmup=nan", "warmup: must be a finite number, got nan"),
        ("when=2026-01-01", "when: dates and times are not allowed"),
    ],
)
def test_a_live_control_json_cannot_hold_is_one_line_and_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str], change: str, message: str
) -> None:
    assert main(["controls", "set", "any-run", change]) == 2
    assert message in one_error_line(capsys.readouterr().err)
