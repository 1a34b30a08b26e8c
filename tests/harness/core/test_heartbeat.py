"""The heartbeat summary: what the person on the phone reads every five minutes."""

from __future__ import annotations

import json

from harness.core.heartbeat import COLOURS, build_heartbeat
from memory import Run
from mistakes import Incident

NOW = 1_800_000_000.0


def running(**kw: object) -> Run:
    progress = {
        "step": 120,
        "total_steps": 600,
        "rate": 3.2,
        "eta_s": 150.0,
        "device": "cpu",
        "metrics": {"loss": 0.213, "avg_bit_acc": 0.91},
        "loss_history": [0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.25, 0.22, 0.213],
        "key_history": [0.5, 0.6, 0.7, 0.8, 0.9, 0.91],
        "cpu_util": 0.93,
        "ram_available": 12 * 1024**3,
    }
    base: dict[str, object] = {
        "id": "echo-1",
        "name": "echo",
        "status": "running",
        "started_at": NOW - 600,
        "progress_at": NOW - 3,
        "progress": progress,
        "spec": {"gates": {"avg_bit_acc": ">= 0.93"}},
    }
    base.update(kw)
    return Run.model_validate(base)


def test_idle_heartbeat() -> None:
    view = build_heartbeat(runs=[], incidents=[], ram_available=8 * 1024**3, host="box", now=NOW)
    assert view.health == "idle" and "idle: no active runs" in view.text
    assert view.embed["color"] == COLOURS["idle"]
    assert "8.0 GB" in view.embed["description"]


def test_active_run_line_has_every_figure() -> None:
    view = build_heartbeat(runs=[running()], incidents=[], ram_available=None, host="box", now=NOW)
    line = view.embed["fields"][0]["value"]
    for piece in (
        "step 120/600 (20%)",
        "3.20 it/s",
        "ETA 2m30s",
        "loss 0.213↓",
        "avg_bit_acc 0.91",
        "CPU 93%",
        "RAM free 12.0 GB",
        "incidents 0",
    ):
        assert piece in line, piece
    assert any(ch in line for ch in "▁▂▃▄▅▆▇█")  # the sparkline
    assert view.health == "ok" and view.embed["color"] == COLOURS["ok"]
    json.dumps(view.embed)  # a valid Discord payload


def test_incidents_and_a_silent_supervisor_change_the_health() -> None:
    inc = Incident(
        id=7,
        ts=NOW - 10,
        run_id="echo-1",
        rule="utilisation",
        mistake_id="M-015",
        severity="abort",
        summary="CPU 6 % over 30 s, threshold 80 %",
    )
    view = build_heartbeat(runs=[running()], incidents=[inc], ram_available=None, host="b", now=NOW)
    assert view.health == "bad" and "CPU 6 % over 30 s" in view.text
    assert "incidents 1" in view.embed["fields"][0]["value"]
    stale = build_heartbeat(
        runs=[running(progress_at=NOW - 400)], incidents=[], ram_available=None, host="b", now=NOW
    )
    assert stale.health == "bad" and "no progress update for 400 s" in stale.text


def test_heartbeat_shows_the_resolved_device_and_each_gpu_as_the_rule_judges_it() -> None:
    from harness.core.machine import GpuReading, MetricLines, ProbeSample, RunMachine
    from harness.core.spec import RunSpec

    machine = RunMachine(RunSpec(name="echo", command=["python"]), started_at=100.0)
    readings = (
        GpuReading(0, 1.0, 0.97, 40 * 1024**3, 80 * 1024**3, held=True),
        GpuReading(1, 0.6, None, 2 * 1024**3, 16 * 1024**3, held=True),
        GpuReading(2, 0.0, 0.0, 0, 80 * 1024**3),  # not the job's
    )
    machine.handle(MetricLines(100.0, [{"step": 1}]))
    machine.handle(ProbeSample(101.0, 0.02, 12 * 1024**3, gpus=readings, cpu_available=0.02))
    run = running(progress=machine.progress.snapshot())
    view = build_heartbeat(runs=[run], incidents=[], ram_available=None, host="box", now=NOW)
    line = view.text.splitlines()[1]
    assert (
        "cuda:0,1 (attributed by NVML) · GPU0 97% SM (util 100%) 40.0/80.0 GB · "
        "GPU1 60% util 2.0/16.0 GB · RAM free 12.0 GB"
    ) in line
    assert "GPU2" not in line and "CPU" not in line
    assert view.embed["fields"][0]["value"] == line.split("] ", 1)[1]
