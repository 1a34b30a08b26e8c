"""The detectors and the diagnosis with plain values: no files, no clocks.

The corpus scores are in ``tests/diagnosis/test_scores.py``; here each rule's edges, the
stream's hostile values, and the shape of the diagnosis.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.detectors import CAUSES, SYMPTOMS, Detectors
from harness.core.diagnose import diagnose
from mistakes._catalogue import BUILTIN_MISTAKES


def run(
    n: int = 600, *, seed: int = 0, changes: dict[int, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    changes = changes or {}
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [{"event": "start", "total_steps": n, "device": "cpu", "t": 0.0}]
    for step in range(1, n + 1):
        line = {
            "step": step,
            "loss": 2 * math.exp(-step / (n / 4)) + 0.2 + rng.gauss(0, 0.005),
            "lr": 1e-3,
            "grad_norm": 0.5 + rng.random() * 0.1,
            "samples_per_s": 1000 + rng.gauss(0, 5),
            "t": step * 0.1,
        }
        line.update(changes.get(step, {}))
        out.append(line)
    return out


def found(records: list[dict[str, Any]]) -> dict[str, Any]:
    d = Detectors()
    d.feed_all(records)
    return {s.symptom: s for s in d.symptoms}


def test_a_healthy_run_has_no_symptom_and_reads_healthy() -> None:
    d = Detectors()
    d.feed_all(run())
    result = diagnose(d)
    assert result.verdict == "healthy" and result.to_json()["findings"] == []
    assert "healthy: no symptom in 601 lines" in result.render_text()


def test_each_symptom_is_reported_once_at_its_first_onset() -> None:
    records = run(changes={300: {"grad_norm": 40.0}, 400: {"grad_norm": 80.0}})
    d = Detectors()
    fresh = [s for rec in records for s in d.feed(rec)] + d.close()
    explosions = [s for s in fresh if s.symptom == "grad_explosion"]
    assert len(explosions) == 1 and explosions[0].step == 300
    assert "grad_norm 40 at step 300" in explosions[0].evidence[0]


def test_an_lr_raised_by_controls_is_the_top_cause_of_what_follows() -> None:
    records = run(600)
    i = next(i for i, r in enumerate(records) if r.get("step") == 400)
    records.insert(i, {"event": "checkpoint", "path": "/c/step-400.pt", "step": 399, "t": 39.9})
    records.insert(i + 1, {"event": "controls", "applied": {"lr": 1e-2}, "t": 39.95})
    for r in records[i + 2 :]:
        if "loss" in r:
            r["loss"] += 0.01 * (r["step"] - 400)
            r["lr"] = 1e-2
    d = Detectors()
    d.feed_all(records)
    report = diagnose(d).to_json()
    assert report["verdict"] == "unhealthy"
    (div,) = [f for f in report["findings"] if f["symptom"] == "divergence"]
    assert div["severity"] == "critical" and div["mistakes"] == ["M-049"]
    top = div["causes"][0]
    assert top["rank"] == 1 and top["cause"] == "lr_change" and top["confidence"] >= 0.8
    assert "lr changed from 0.001 to 0.01 (10x)" in top["evidence"][0]
    assert "set lr back to 0.001" in top["fix"] and "step 399 (/c/step-400.pt)" in top["fix"]
    assert all(0 <= c["confidence"] <= 1 for c in div["causes"])
    assert [c["rank"] for c in div["causes"]] == list(range(1, len(div["causes"]) + 1))
    assert any("Set lr back to 0.001" in w for w in report["quick_wins"])


def test_an_isolated_spike_with_no_change_is_a_bad_batch() -> None:
    s = found(run(changes={350: {"loss": 5.0}}))
    assert set(s) == {"loss_spike"}
    d = Detectors()
    d.feed_all(run(changes={350: {"loss": 5.0}}))
    (f,) = diagnose(d).findings
    assert f.causes[0].cause == "bad_batch" and f.severity == "info"


def test_missing_metrics_disable_their_detectors() -> None:
    only_loss = [{k: v for k, v in r.items() if k in ("step", "loss", "t", "event")} for r in run()]
    assert found(only_loss) == {}
    no_loss = [{k: v for k, v in r.items() if k != "loss"} for r in run()]
    assert found(no_loss) == {}


def test_a_stall_is_a_gap_in_the_train_phase_only() -> None:
    records = run(300)
    for r in records[200:]:
        r["t"] += 600.0  # ten minutes without a line after step 199
    assert "stall" in found(records)
    records.insert(200, {"event": "phase", "phase": "eval", "t": records[199]["t"]})
    records.insert(201, {"event": "phase", "phase": "train", "t": records[201]["t"]})
    assert "stall" not in found(records)  # a long eval is not a stall


def test_an_accuracy_that_falls_and_stays_down_collapses_once_a_dip_does_not() -> None:
    records = run(600)
    evals = []
    for step in range(50, 601, 50):
        acc = 0.93 if step < 400 else 0.6
        evals.append({"step": step, "avg_bit_acc": acc + step * 1e-6, "t": step * 0.1})
    dip = [dict(e) for e in evals]
    dip[5]["avg_bit_acc"] = 0.91  # one eval two points down, then back
    for e in dip:
        e["avg_bit_acc"] = max(e["avg_bit_acc"], 0.9)
    assert "metric_collapse" in found(records + evals)
    assert "metric_collapse" not in found(records + dip)


hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "step",
                    "loss",
                    "grad_norm",
                    "lr",
                    "t",
                    "event",
                    "val_loss",
                    "acc",
                    "samples_per_s",
                    "phase",
                    "applied",
                    "total_steps",
                    "path",
                ]
            ),
            hostile,
            max_size=8,
        ),
        max_size=60,
    )
)
def test_no_line_however_odd_makes_the_detectors_raise(lines: list[dict[str, Any]]) -> None:
    d = Detectors()
    for rec in lines:
        for s in d.feed(rec):
            assert s.symptom in SYMPTOMS
    d.close()
    report = diagnose(d).to_json()
    json.dumps(report, allow_nan=False)  # strict JSON whatever came in
    for f in report["findings"]:
        assert {c["cause"] for c in f["causes"]} <= set(CAUSES)


def test_every_linked_mistake_is_in_the_catalogue() -> None:
    from harness.core.diagnose import SYMPTOM_MISTAKES
    from mistakes import RULE_LINKS

    ids = {m.id for m in BUILTIN_MISTAKES}
    assert set(SYMPTOMS) <= set(RULE_LINKS)  # every symptom is a rule with its links
    assert {m for ms in SYMPTOM_MISTAKES.values() for m in ms} <= ids


# -- live, in the run's machine ---------------------------------------------------------------


def _lr_raised(n: int = 600) -> list[dict[str, Any]]:
    records = run(n)
    i = next(i for i, r in enumerate(records) if r.get("step") == 400)
    records.insert(i, {"event": "controls", "applied": {"lr": 1e-2}, "t": 39.95})
    for r in records[i + 1 :]:
        if "loss" in r:
            r["loss"] += 0.01 * (r["step"] - 400)
            r["lr"] = 1e-2
    return records


def _machine(**diagnose_policy: str) -> Any:
    from harness.core.machine import RunMachine
    from harness.core.spec import RunSpec

    spec = RunSpec.model_validate(
        {
            "name": "live",
            "command": ["x"],
            "device": "cpu",
            "diagnose": diagnose_policy,
            "watch": {"stall_s": 1e6, "util_grace_s": 1e6},
        }
    )
    return RunMachine(spec, started_at=0.0)


def test_live_divergence_aborts_by_default_with_its_diagnosis_as_evidence() -> None:
    from harness.core.machine import MetricLines, RecordIncident, Terminate

    m = _machine()
    acts = m.handle(MetricLines(60.0, _lr_raised()))
    assert m.status == "aborting" and any(isinstance(a, Terminate) for a in acts)
    (incident,) = [a for a in acts if isinstance(a, RecordIncident)]
    assert incident.finding.rule == "divergence" and incident.severity == "abort"
    causes = incident.finding.evidence["diagnosis"]["causes"]
    assert causes[0]["cause"] == "lr_change"


def test_a_warn_policy_alerts_with_the_card_and_shows_in_the_heartbeat() -> None:
    from harness.core.heartbeat import run_summary
    from harness.core.machine import MetricLines, Notify, RecordIncident
    from memory import Run

    m = _machine(divergence="warn", grad_explosion="off")
    acts = m.handle(MetricLines(60.0, _lr_raised()))
    assert m.status == "running"
    incidents = [a for a in acts if isinstance(a, RecordIncident)]
    assert [i.finding.rule for i in incidents] == ["divergence"]
    (alert,) = [a for a in acts if isinstance(a, Notify)]
    assert alert.alert and "diagnosis: the loss diverged at step" in alert.text
    assert "cause: lr_change (90%): set lr back to 0.001" in alert.text and "M-049" in alert.text
    assert alert.embed is not None  # the card, for Discord
    assert alert.embed["title"].startswith("live: the loss diverged at step")
    assert alert.embed["fields"][0]["name"] == "1) lr_change (90%)"
    assert alert.embed["color"] == 0xE74C3C and "see M-049" in alert.embed["description"]
    snap = m.progress.snapshot()
    assert snap["diagnosis"] and snap["diagnosis"][0].startswith("the loss diverged at step")
    row = Run(
        id="r",
        name="live",
        spec={},
        status="running",
        run_dir="/x",
        progress=snap,
        progress_at=60.0,
        started_at=0.0,
    )
    health, line = run_summary(row, now=61.0)
    assert health == "warn" and "⚠ the loss diverged at step" in line


def test_an_off_policy_says_nothing_live_but_the_final_diagnosis_keeps_it() -> None:
    from harness.core.machine import Exited, Finish, MetricLines

    m = _machine(divergence="off", grad_explosion="off")
    assert m.handle(MetricLines(60.0, _lr_raised())) == []
    (finish,) = [a for a in m.handle(Exited(61.0, 0)) if isinstance(a, Finish)]
    assert finish.status == "succeeded"
    assert finish.result["diagnosis"]["verdict"] == "unhealthy"
    assert {f["symptom"] for f in finish.result["diagnosis"]["findings"]} >= {"divergence"}


def _rolling(**extra: Any) -> Any:
    from harness.core.machine import RunMachine
    from harness.core.spec import RunSpec

    spec = RunSpec.model_validate(
        {
            "name": "live",
            "command": ["x"],
            "device": "cpu",
            "resume": ["--resume", "{checkpoint}"],
            "diagnose": {"divergence": "rollback", "grad_explosion": "off", **extra},
            "watch": {"stall_s": 1e6, "util_grace_s": 1e6},
        }
    )
    return RunMachine(spec, started_at=0.0)


def _with_checkpoint(records: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    i = next(i for i, r in enumerate(records) if r.get("step") == step)
    ckpt = {"event": "checkpoint", "path": f"/c/step-{step}.pt", "step": step, "t": step * 0.1}
    return [*records[: i + 1], ckpt, *records[i + 1 :]]


def test_a_rollback_stops_the_job_and_starts_it_from_the_checkpoint_before_the_onset() -> None:
    from harness.core.machine import Exited, MetricLines, RecordIncident, Relaunch, Terminate

    m = _rolling()
    acts = m.handle(MetricLines(60.0, _with_checkpoint(_lr_raised(), 350)))
    (stop,) = [a for a in acts if isinstance(a, Terminate)]
    assert stop.restart and m.status == "restarting"
    (incident,) = [a for a in acts if isinstance(a, RecordIncident)]
    assert "rolling back to the checkpoint at step 350 with lr 0.0005" in incident.finding.summary
    assert incident.action == "rollback 1 of 2"
    assert m.handle(Exited(61.0, 0)) == [Relaunch("/c/step-350.pt", {"lr": 0.0005}, 1)]
    assert m.status == "running" and m.progress.snapshot()["attempts"][0]["checkpoint_step"] == 350


def test_no_checkpoint_or_no_rollback_left_is_an_abort_and_an_abort_wins_over_a_restart() -> None:
    from harness.core.machine import AbortRequested, Exited, Finish, MetricLines

    m = _rolling()
    m.handle(MetricLines(60.0, _lr_raised()))  # no checkpoint event at all
    assert m.status == "aborting" and "not rolled back: no checkpoint" in (m.abort_reason or "")
    m = _rolling(rollback={"max": 0})
    m.handle(MetricLines(60.0, _with_checkpoint(_lr_raised(), 350)))
    assert m.status == "aborting" and "0 rollback(s) used" in (m.abort_reason or "")
    m = _rolling()
    m.handle(MetricLines(60.0, _with_checkpoint(_lr_raised(), 350)))
    assert m.status == "restarting"
    m.handle(AbortRequested(60.5, "stop it", "test"))
    (finish,) = [a for a in m.handle(Exited(61.0, 0)) if isinstance(a, Finish)]
    assert finish.status == "aborted"  # the user's abort: the job is not started again


def test_a_rollback_needs_a_way_to_resume() -> None:
    import pytest

    from harness.core.spec import RunSpec, SpecError, spec_from_mapping

    data = {"name": "x", "command": ["p"], "diagnose": {"divergence": "rollback"}}
    with pytest.raises(SpecError, match=r"needs resume, the arguments that resume the command"):
        spec_from_mapping(data, source="s.toml")
    ok = RunSpec.model_validate({**data, "resume": ["--resume", "{checkpoint}"]})
    assert ok.diagnose.rollback.lr_factor == 0.5 and ok.diagnose.rollback.max == 2
