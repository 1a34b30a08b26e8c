"""The shipped `echo` preset end to end: `harness run echo` as a subprocess with its own
HARNESS_HOME, the real trainer, the real preflight, the real gate.

A short step budget keeps each run to seconds: 20 steps cannot reach the preset's gate,
so the run must fail on it (M-014) with the accuracy it reached; with the gate lowered by
``--set`` the same run succeeds. A window too short for echo fails the preflight, and
the launch is refused with an incident linked to M-008.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Reaper

HARNESS = [sys.executable, "-m", "harness"]
SHORT = ["--set", "args.steps=20", "--set", "args.batch=128", "--set", "args.threads=1"]


class Home:
    """One HARNESS_HOME (and data dir) in tmp_path; `harness` runs as a subprocess there."""

    def __init__(self, tmp: Path, reaper: Reaper) -> None:
        self.tmp = tmp
        self.env = reaper.env(HARNESS_HOME=str(tmp / "home"), HARNESS_DATA_DIR=str(tmp / "data"))

    def __call__(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HARNESS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def last_run(self) -> dict[str, Any]:
        runs = self.json("runs")
        assert runs, "no run recorded"
        return dict(runs[0])

    def metrics(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        text = (Path(run["run_dir"]) / "metrics.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@pytest.fixture
def home(tmp_path: Path, reaper: Reaper) -> Home:
    return Home(tmp_path, reaper)


def test_echo_with_too_few_steps_fails_its_gate_with_an_m014_incident(home: Home) -> None:
    done = home("run", "echo", *SHORT)
    run = home.last_run()
    assert run["status"] == "failed", done.stdout + done.stderr
    assert done.returncode != 0

    # Metrics flowed: loss lines up to step 20, then the final evaluation.
    lines = home.metrics(run)
    steps = [m["step"] for m in lines if "loss" in m and "step" in m]
    assert steps[-1] == 20
    end = lines[-1]
    assert end["event"] == "end" and end["steps"] == 20
    reached = end["avg_bit_acc"]
    assert 0.0 < reached < 0.93

    gate = [i for i in home.json("incidents") if i["run_id"] == run["id"]]
    assert [i["mistake_id"] for i in gate] == ["M-014"]
    assert f"{reached:.4f}" in gate[0]["summary"] + json.dumps(gate[0]["evidence"])


def test_echo_with_a_lowered_gate_succeeds(home: Home) -> None:
    done = home("run", "echo", *SHORT, "--set", 'gates.avg_bit_acc=">= 0.5"')
    run = home.last_run()
    assert run["status"] == "succeeded", done.stdout + done.stderr
    assert done.returncode == 0
    assert home.metrics(run)[-1]["avg_bit_acc"] >= 0.5
    assert [i for i in home.json("incidents") if i["run_id"] == run["id"]] == []


def test_a_failing_preflight_refuses_the_launch_with_an_m008_incident(home: Home) -> None:
    done = home("run", "echo", "--set", "args.seq_len=4")
    assert done.returncode != 0
    run = home.last_run()
    assert run["status"] == "failed", done.stdout + done.stderr
    # The job itself never started: it wrote no metrics.
    metrics = Path(run["run_dir"]) / "metrics.jsonl"
    assert not metrics.exists() or home.metrics(run) == []
    refused = [i for i in home.json("incidents") if i["run_id"] == run["id"]]
    assert [i["mistake_id"] for i in refused] == ["M-008"]
    assert "seq_len: 4 < 9" in refused[0]["summary"]
    # Every check of the preflight command ran: gradient flow and the data passed.
    checks = {c["name"]: c for c in run["result"]["checks"]}
    assert checks["gradient flow"]["passed"], checks
    assert "get a finite non-zero gradient" in checks["gradient flow"]["evidence"]
    assert checks["data train"]["passed"] and checks["data val"]["passed"]
    assert not checks["seq_len"]["passed"]


SHADOW = """import pathlib, sys
pathlib.Path({marker!r}).write_text("the user's {pkg} ran instead of harness's")
sys.exit(3)
"""


def test_a_model_or_harness_folder_in_the_working_directory_never_stands_in(
    home: Home, tmp_path: Path
) -> None:
    """Presets start the bundled ``model`` package and the job wrapper with ``python -P``:
    a ``model/`` or ``harness/`` package in the user's working directory is not imported."""
    work = tmp_path / "project"
    marker = tmp_path / "shadowed"
    for pkg, module in (("model", "train"), ("harness", "__main__")):
        (work / pkg / "runtime").mkdir(parents=True)
        (work / pkg / "__init__.py").write_text("")
        (work / pkg / f"{module}.py").write_text(SHADOW.format(marker=str(marker), pkg=pkg))
        (work / pkg / "runtime" / "__init__.py").write_text("")
        (work / pkg / "runtime" / "wrap.py").write_text(SHADOW.format(marker=str(marker), pkg=pkg))
    console = [str(Path(sys.executable).parent / "harness")]  # as a user types `harness`

    def harness(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*console, *args], env=home.env, capture_output=True, text=True, timeout=120, cwd=work
        )

    check = harness("check", "echo", "--set", "watch.min_ram_free_gb=0.1")
    assert not marker.exists(), marker.read_text()
    assert check.returncode == 0, check.stdout + check.stderr
    assert "PASS  gradient flow" in check.stdout
    burn = harness(
        "run", "cpu-burn", "--set", "args.seconds=1.5", "--set", "watch.min_ram_free_gb=0.1"
    )
    assert not marker.exists(), marker.read_text()
    assert burn.returncode == 0, burn.stdout + burn.stderr
    assert json.loads(harness("runs", "--json").stdout)[0]["status"] == "succeeded"
