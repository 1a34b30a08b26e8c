"""The exit-code table over every command: 0 found / done, 1 failure (incl. not found),
2 bad usage or bad input; every error is one line on stderr."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import mistakes as ml
from harness import __version__
from harness.cli.main import main
from memory import Run

FIXTURE = Path(__file__).parents[2] / "fixtures" / "MISTAKES.md"
ARGPARSE = "argparse"  # argparse prints its own usage line, then the error line


@pytest.fixture
def world(home: Path, tmp_path: Path) -> Iterator[Path]:
    """A state dir with one finished run, one (pretend) running run and one incident."""
    live_dir, done_dir = home / "runs" / "live-1", home / "runs" / "done-1"
    for d in (live_dir, done_dir):
        d.mkdir(parents=True)
        (d / "stdout.log").write_text("hello\n")
    with ml.open_log(home / "harness.db") as store, store.write() as s:
        s.add(Run(id="done-1", name="done", status="succeeded", run_dir=str(done_dir)))
        s.add(Run(id="live-1", name="live", status="running", run_dir=str(live_dir)))
        ml.record_incident(session=s, rule="stall", summary="no metrics for 130 s", run_id="done-1")
    (tmp_path / "bad.toml").write_text('name = "bad"\ncommand = ["python"]\n[watch]\nmin_utl = 1\n')
    (tmp_path / "a-dir").mkdir()
    yield tmp_path


CASES: list[tuple[list[str], int | str]] = [
    # the mistake log
    (["mistakes", "list"], 0),
    (["mistakes", "show", "M-015"], 0),
    (["mistakes", "show", "M-999"], 1),
    (["mistakes", "show", "not an id"], 2),
    (["mistakes", "search", "gpu"], 0),
    (["mistakes", "search", "--limit", "0", "gpu"], 2),
    (["mistakes", "add", "--title", "Forgot the seed"], 0),
    (["mistakes", "add", "--title", "   "], 2),
    (["mistakes", "add", "--title", "x", "--field", "no-equals"], 2),
    (["mistakes", "import", str(FIXTURE)], 0),
    (["mistakes", "import", "{tmp}/nope.md"], 1),
    (["mistakes", "import", "{tmp}/a-dir"], 2),
    (["mistakes", "export"], 0),
    (["incidents"], 0),
    (["incidents", "--since", "yesterday-ish"], 2),
    (["incidents", "show", "1"], 0),
    (["incidents", "show", "999"], 1),
    (["incidents", "resolve", "999", "--note", "x"], 1),
    (["incidents", "resolve", "1", "--note", "fixed the loader"], 0),
    (["checklist"], 0),
    # runs
    (["status"], 0),
    (["status", "live-1"], 0),
    (["status", "last"], 0),
    (["status", "nope"], 1),
    (["status", " "], 1),
    (["runs", "--json"], 0),
    (["logs", "done-1"], 0),
    (["logs", "nope"], 1),
    (["abort", "nope"], 1),
    (["abort", "done-1"], 1),
    (["controls", "set", "live-1", "lr=0.0005", "eval_every=50"], 0),
    (["controls", "set", "live-1", "lr=-1"], 2),
    (["controls", "set", "live-1", "lr"], 2),
    (["controls", "set", "nope", "lr=0.1"], 1),
    (["controls", "set", "done-1", "lr=0.1"], 1),
    (["controls", "show", "live-1"], 0),
    (["controls", "show", "nope"], 1),
    (["run", "no-such-preset"], 1),
    (["run", "{tmp}/missing.toml"], 1),
    (["run", "{tmp}/bad.toml"], 2),
    (["run", "cpu-burn", "--set", "watch.min_util=5"], 2),
    (["run", "cpu-burn", "--set", "nokey"], 2),
    (["check", "no-such-preset"], 1),
    (["check", "cpu-burn", "--set", "watch.nope=1"], 2),
    (["presets"], 0),
    (["adopt"], 0),
    # memory
    (["note", "add", "look at the loader"], 0),
    (["notes"], 0),
    (["notes", "--limit", "0"], 2),
    (["orders", "add", "never run two jobs on one GPU"], 0),
    (["orders", "list"], 0),
    (["orders", "remove", "99"], 1),
    (["inbox"], 0),
    (["brief", "--format", "json"], 0),
    # messages and the daemon
    (["send", "hello"], 0),
    (["send", "   "], 2),
    (["messages"], 0),
    (["messages", "--state", "bogus"], ARGPARSE),
    (["heartbeat"], 0),
    (["token"], 0),
    (["bot", "sync"], 2),
    (["config"], 0),
    (["serve", "--heartbeat", "0"], 2),
    (["serve", "--port", "99999"], 2),
    # usage
    (["no-such-command"], ARGPARSE),
    ([], 2),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_exit_codes(
    world: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: int | str
) -> None:
    argv = [a.replace("{tmp}", str(world)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses before any handler runs
        assert expected == ARGPARSE, argv
        assert exc.code == 2
        return
    assert code == expected, capsys.readouterr()
    err = capsys.readouterr().err
    if code != 0 and argv:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("harness: error: "), err
        assert len(lines) == 1, err  # one line, never a traceback


def test_a_second_serve_is_a_failure_not_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    with (home / "serve.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running harness serve holds it
        assert main(["serve", "--port", "0"]) == 1
    assert "already running" in capsys.readouterr().err


def test_a_broken_config_is_bad_input_for_every_command(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    (home / "harness.toml").write_text("[heartbeat]\ninterval_s = -1\n")
    for argv in (["config"], ["status"], ["mistakes", "list"], ["heartbeat"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("harness: error: ") and "heartbeat.interval_s" in err
        assert "\n" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"harness {__version__}"


def test_controls_set_merges_into_the_runs_controls(
    world: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controls = home / "runs" / "live-1" / "controls.json"
    controls.write_text('{"lr": 0.001, "seed": 3}')
    assert main(["controls", "set", "live-1", "lr=5e-4", "data_weights={echo = 1}"]) == 0
    assert "lr=0.0005" in capsys.readouterr().out
    assert json.loads(controls.read_text()) == {
        "lr": 0.0005,
        "seed": 3,
        "data_weights": {"echo": 1.0},
    }
    # a control harness does not know is passed to the job, with a note saying so
    assert main(["controls", "set", "live-1", "warmup=100", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["controls"]["warmup"] == 100
    assert "warmup not among the controls harness knows" in err
    assert main(["controls", "show", "live-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["controls"]["warmup"] == 100
