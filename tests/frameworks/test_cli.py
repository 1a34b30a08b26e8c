"""A Lightning job supervised by `harness run` itself (a subprocess, its own state dir):
the run's verdict, its exit code, and the check's incident as `harness incidents` lists it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Reaper
from tests.e2e.test_supervisor_cli import HARNESS, write_spec
from tests.frameworks._helpers import JOBS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_harness_run_supervises_a_lightning_fit_and_its_checks(
    tmp_path: Path, reaper: Reaper
) -> None:
    env = reaper.env(HARNESS_HOME=str(tmp_path / "state"))

    def harness(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HARNESS, *args], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
        )

    command = [sys.executable, str(JOBS / "lightning_job.py")]
    good = write_spec(
        tmp_path / "good.toml", "pl-good", command, env={"FW_STEPS": "8"}, gates={"step": ">= 8"}
    )
    ran = harness("run", str(good))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    runs = json.loads(harness("runs", "--json").stdout)
    (row,) = runs
    # the row's progress is the final one (not the last write before the job's lines came)
    assert row["status"] == "succeeded" and row["progress"]["step"] == 8
    assert {"loss", "lr", "grad_norm"} <= set(row["progress"]["metrics"])

    cut = write_spec(tmp_path / "cut.toml", "pl-cut", command, env={"FW_CUT": "1"})
    ran = harness("run", str(cut))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    listed = json.loads(harness("incidents", "--json").stdout)
    (inc,) = [i for i in listed if i["rule"] == "gradient_flow"]
    assert inc["mistake_id"] == "M-032" and inc["severity"] == "error"
    assert "FAIL gradient_flow: 2 of 5 trainable parameters cannot learn" in inc["summary"]
