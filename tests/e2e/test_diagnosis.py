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
from harness.core.spec import RunSpec, apply_overrides
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


def echo(steps: int, lr: float, *overrides: str) -> RunSpec:
    """The shipped echo preset, short and logged often, with the e2e thresholds."""
    spec, _ = load_spec("echo")
    watch = [f"watch.{k}={v}" for k, v in FAST_WATCH.items() if k != "util_grace_s"]
    args = [f"args.steps={steps}", f"args.lr={lr}", "args.batch=128", "args.threads=2"]
    args += ["args.eval_every=25", "args.log_every=5", "watch.util_grace_s=600"]
    return apply_overrides(spec, [*watch, *args, *overrides])


async def test_a_data_mix_change_is_diagnosed_live_as_a_collapse_from_the_data_change(
    sup: Supervisor,
    store: Store,
    notes: Notes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    # divergence only warns: the run goes on, so the collapse is seen too
    spec = echo(260, 0.003, "diagnose.divergence=warn")
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


@pytest.mark.timeout(300)  # two trainer starts and 300 steps on 2 CPU cores
async def test_an_lr_raised_tenfold_is_rolled_back_from_its_checkpoint_and_then_succeeds(
    sup: Supervisor,
    store: Store,
    notes: Notes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    spec = echo(
        300,
        0.01,
        "args.checkpoint_every=50",
        "diagnose.divergence=rollback",
        "diagnose.metric_collapse=rollback",
        "diagnose.grad_explosion=warn",
    )
    run_id = await sup.launch(spec, source="test")
    run_dir = Path(get_run(store, run_id).run_dir)
    await await_for(lambda: steps(run_dir / "metrics.jsonl") >= 120, 90, "120 steps trained")
    # as `harness controls set RUN lr=0.1` does: ten times the lr
    update_controls(run_dir, {"lr": 0.1})
    row = await finish(sup, run_id, timeout=200)
    assert row.status == "succeeded", (row.summary, [i.summary for i in _incidents(store, run_id)])
    assert "avg_bit_acc" in row.summary and "pass" in row.summary
    attempts = (row.progress or {}).get("attempts") or []
    assert len(attempts) == 1, attempts
    rollback = attempts[0]
    assert rollback["checkpoint_step"] <= 120 and rollback["lr"] == pytest.approx(0.005)
    (incident,) = [
        i for i in _incidents(store, run_id) if "rolling back to the checkpoint" in i.summary
    ]
    assert incident.rule in ("divergence", "metric_collapse") and incident.severity == "warn"
    assert any("resumed from" in t for t in notes.texts())
    assert json.loads((run_dir / "controls.json").read_text())["lr"] == pytest.approx(0.005)
    starts = [
        json.loads(x)
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"start"' in x
    ]
    assert len(starts) == 2 and starts[1]["resumed_from"] == rollback["checkpoint_step"]


def _incidents(store: Store, run_id: str) -> list[ml.Incident]:
    with store.read() as s:
        return ml.list_incidents(session=s, run_id=run_id)
