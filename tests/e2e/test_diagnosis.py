"""The live diagnosis end to end: the shipped ``echo`` preset, the real trainer, a data
mix changed mid-run through the run's controls (as ``harness controls set`` does).

What a user sees: an alert naming ``metric_collapse`` with the cause ``data_change`` while
the run goes on, an incident linked to the mistakes of the symptom, and the same finding
from ``harness diagnose RUN`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mistakes as ml
from harness.core.spec import apply_overrides
from harness.runtime.controls import update_controls
from harness.runtime.specs import load_spec
from harness.runtime.supervisor import Supervisor
from memory import Store
from tests.e2e.conftest import FAST_WATCH, Notes, await_for, finish, get_run

pytestmark = pytest.mark.slow


def steps(path: Path) -> int:
    done = 0
    for line in path.read_text().splitlines():
        if '"loss"' in line:
            try:
                done = max(done, int(json.loads(line)["step"]))
            except (ValueError, KeyError):
                continue
    return done


async def test_a_data_mix_change_is_diagnosed_live_as_a_collapse_from_the_data_change(
    sup: Supervisor,
    store: Store,
    notes: Notes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    spec, _ = load_spec("echo")
    watch = [f"watch.{k}={v}" for k, v in FAST_WATCH.items() if k != "util_grace_s"]
    spec = apply_overrides(
        spec,
        [
            *watch,
            "watch.util_grace_s=600",
            "args.steps=260",
            "args.batch=128",
            "args.lr=0.003",
            "args.threads=2",
            "args.eval_every=25",
            "args.log_every=5",
            "diagnose.divergence=warn",  # the run goes on, so the collapse is seen too
        ],
    )
    run_id = await sup.launch(spec, source="test")
    metrics = Path(get_run(store, run_id).run_dir) / "metrics.jsonl"
    await await_for(lambda: steps(metrics) >= 150, 90, "150 steps trained")
    update_controls(get_run(store, run_id).run_dir, {"data_weights": {"not": 1.0}})
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "failed" and "failed gates" in row.summary  # it never recovers

    alerts = [t for t, alert in notes.items if alert and "diagnosis:" in t]
    collapse = [t for t in alerts if "an eval metric collapsed" in t]
    assert collapse, alerts
    assert "cause: data_change" in collapse[0] and "the data mix changed to" in collapse[0]
    with store.read() as s:
        found = ml.list_incidents(session=s, run_id=run_id)
    (incident,) = [i for i in found if i.rule == "metric_collapse"]
    assert incident.mistake_id in ("M-039", "M-018")
    assert incident.evidence["diagnosis"]["causes"][0]["cause"] == "data_change"

    home = str(Path(row.run_dir).parents[1])
    p = subprocess.run(
        [sys.executable, "-m", "harness", "diagnose", run_id, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HARNESS_HOME": home, "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    symptoms = {f["symptom"]: f for f in report["findings"]}
    assert symptoms["metric_collapse"]["causes"][0]["cause"] == "data_change"
    assert (row.result or {})["diagnosis"]["verdict"] == "unhealthy"
