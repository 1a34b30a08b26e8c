"""The run state machine fed with synthetic events and a fake clock: no processes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from harness.core.format import progress_line
from harness.core.machine import (
    AbortRequested,
    Action,
    Exited,
    Finish,
    GpuReading,
    MetricLines,
    Notify,
    ProbeSample,
    RecordIncident,
    RunMachine,
    SupervisionLost,
    Terminate,
    Tick,
)
from harness.core.spec import RunSpec, apply_overrides

GIB = 1024**3
RAM = 16 * GIB


def make(*overrides: str, device: str = "cpu", gates: dict[str, str] | None = None) -> RunMachine:
    spec = RunSpec(
        name="echo",
        command=["python"],
        device=device,
        gates=gates if gates is not None else {"avg_bit_acc": ">= 0.9"},
    )
    spec = apply_overrides(
        spec,
        [
            "watch.util_grace_s=10",
            "watch.util_window_s=5",
            "watch.stall_s=30",
            "watch.min_ram_free_gb=1",
            *overrides,
        ],
    )
    return RunMachine(spec, started_at=100.0)


def lines(t: float, *records: dict[str, Any]) -> MetricLines:
    return MetricLines(t, list(records))


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def only(actions: Sequence[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def sample(t: float, cpu: float | None, ram: int = RAM, **kw: Any) -> ProbeSample:
    return ProbeSample(t, cpu, ram, **kw)


def train(m: RunMachine, until: float, *, cpu: float = 0.95, t0: float = 100.0) -> list[Action]:
    """A healthy job: a step line every second with a probe sample, until ``until``."""
    out: list[Action] = []
    t, step = t0, 0
    while t <= until:
        out += m.handle(lines(t, {"step": step, "loss": 1.0 / (1 + step)}))
        out += m.handle(sample(t, cpu))
        t, step = t + 1.0, step + 1
    return out


# -- a normal run -------------------------------------------------------------------------


def test_a_normal_run_succeeds_with_its_gates() -> None:
    m = make()
    acts = m.handle(lines(100.0, {"event": "start", "total_steps": 20, "device": "cpu"}))
    acts += train(m, 119.0)
    acts += m.handle(lines(120.0, {"event": "end", "avg_bit_acc": 0.95, "loss": 0.05}))
    assert acts == []
    [finish, said] = m.handle(Exited(120.5, 0))
    assert isinstance(finish, Finish) and isinstance(said, Notify)
    assert finish.status == "succeeded"
    assert finish.summary == "succeeded: avg_bit_acc = 0.95 (pass, gate avg_bit_acc >= 0.9)"
    assert said.alert and said.text == f"echo: {finish.summary}"
    assert finish.result["exit_code"] == 0
    assert finish.result["final"]["avg_bit_acc"] == 0.95
    assert finish.result["gates"] == [
        {"metric": "avg_bit_acc", "gate": "avg_bit_acc >= 0.9", "value": 0.95, "passed": True}
    ]
    assert m.status == "succeeded"
    assert m.done


def test_a_run_without_gates_succeeds_on_a_clean_exit() -> None:
    m = make(gates={})
    [finish, said] = m.handle(Exited(101.0, 0))
    assert isinstance(finish, Finish) and isinstance(said, Notify)
    assert finish.status == "succeeded"
    assert "no gates declared" in finish.summary


# -- non-finite ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, "nan", "inf", -math.inf])
def test_nan_line_aborts_then_exit_finishes_aborted(value: Any) -> None:
    m = make()
    train(m, 105.0)
    acts = m.handle(lines(106.0, {"step": 80, "loss": value}, {"step": 81, "loss": 0.1}))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    incident = acts[0]
    assert isinstance(incident, RecordIncident)
    assert incident.finding.rule == "nonfinite"
    assert incident.finding.evidence["step"] == 80
    assert incident.severity == "abort"
    assert "at step 80" in only(acts, Notify)[0].text
    assert m.status == "aborting"
    assert m.progress.step == 80  # the line after the NaN was not taken in
    # the process tree is being terminated: nothing else can abort it twice
    assert m.handle(lines(107.0, {"step": 82, "grad_norm": "nan"})) == []
    assert m.handle(Tick(200.0)) == []
    assert m.handle(AbortRequested(108.0, "again")) == []
    acts = m.handle(Exited(109.0, -2))
    assert kinds(acts) == ["Finish", "Notify"]
    finish = acts[0]
    assert isinstance(finish, Finish)
    assert finish.status == "aborted"
    assert finish.summary.startswith("aborted: loss is ")
    assert m.status == "aborted"


def test_nonfinite_warn_mode_warns_once_and_keeps_running() -> None:
    m = make("watch.nonfinite=warn")
    first = m.handle(lines(101.0, {"step": 1, "loss": "nan"}))
    again = m.handle(lines(102.0, {"step": 2, "loss": "nan"}))
    assert kinds(first) == ["RecordIncident", "Notify"]
    assert again == []
    assert m.status == "running"


def test_nonfinite_in_another_metric_does_not_abort() -> None:
    m = make()
    assert m.handle(lines(101.0, {"step": 1, "loss": 0.5, "lr": "nan", "eval_loss": "inf"})) == []
    assert m.status == "running"


# -- stall --------------------------------------------------------------------------------


def test_stall_counts_from_the_last_line() -> None:
    m = make()
    train(m, 120.0)  # last line at 120
    assert m.handle(Tick(150.0)) == []
    acts = m.handle(Tick(150.5))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    finding = only(acts, RecordIncident)[0].finding
    assert finding.rule == "stall"
    assert finding.evidence == {"silent_s": 30.5, "stall_s": 30.0}
    assert m.handle(Exited(152.0, -15))[0] == Finish(
        "aborted",
        "aborted: no metrics for 30 s, limit 30 s",
        {"exit_code": -15, "final": {"loss": pytest.approx(1 / 21)}},
    )


def test_stall_before_the_first_line_counts_from_launch() -> None:
    m = make()
    assert m.handle(Tick(130.0)) == []
    assert only(m.handle(Tick(131.0)), Terminate)


def test_garbage_lines_do_not_reset_the_stall_clock() -> None:
    m = make()
    m.handle(MetricLines(125.0, [], garbage=3, first_garbage="oops"))
    assert only(m.handle(Tick(131.0)), Terminate)


# -- utilisation --------------------------------------------------------------------------


def test_low_utilisation_in_train_phase_aborts_after_grace_and_window() -> None:
    m = make()
    acts = train(m, 114.0, cpu=0.05)
    # grace 10 + window 5: no verdict before 115, only the early warning (half a window)
    assert kinds(acts) == ["Notify"]
    acts = m.handle(lines(115.0, {"step": 15, "loss": 0.1})) + m.handle(sample(115.0, 0.05))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    finding = only(acts, RecordIncident)[0].finding
    assert finding.rule == "utilisation"
    assert (
        finding.summary == "CPU 5 % over 5 s, threshold 80 % (running; device cpu, from the spec)"
    )
    assert finding.evidence["mean_util"] == pytest.approx(0.05)


def test_an_eval_phase_in_the_window_prevents_the_verdict() -> None:
    m = make()
    train(m, 110.0, cpu=0.05)
    m.handle(lines(111.0, {"event": "phase", "phase": "eval"}))
    for t in (111.0, 112.0, 113.0):
        assert m.handle(sample(t, 0.0)) == []
        assert m.handle(lines(t, {"event": "phase", "phase": "eval", "note": "still"})) == []
    m.handle(lines(114.0, {"event": "phase", "phase": "train"}))
    acts: list[Action] = []
    for t in (114.0, 115.0, 116.0, 117.0, 118.0):
        acts += m.handle(lines(t, {"step": int(t), "loss": 0.1}))
        acts += m.handle(sample(t, 0.05))
    assert kinds(acts) == ["Notify"]  # only the warning: eval samples are still in the window
    acts = []
    for t in (119.0, 120.0):
        acts += m.handle(lines(t, {"step": int(t)})) + m.handle(sample(t, 0.05))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]  # at 120: all train, idle


def test_gpu_runs_are_judged_on_the_gpu_not_the_cpu() -> None:
    m = make(device="cuda:0")
    acts: list[Action] = []
    for i in range(20):
        t = 100.0 + i
        acts += m.handle(lines(t, {"step": i}))
        acts += m.handle(sample(t, 0.01, gpu_busy=0.2, vram_used=GIB, vram_total=8 * GIB))
    [incident] = only(acts, RecordIncident)
    assert incident.finding.summary == (
        "GPU 20 % over 5 s, threshold 80 % (device cuda:0, from the spec)"
    )


def test_device_reported_by_the_job_replaces_auto() -> None:
    m = make(device="auto")
    assert (m.device, m.device_by) == ("auto", "not resolved yet")
    m.handle(lines(100.0, {"event": "start", "total_steps": 10, "device": "cuda:0"}))
    assert (m.device, m.device_by) == ("cuda:0", "from the start event")
    snap = m.progress.snapshot()
    assert (snap["device"], snap["device_by"]) == ("cuda:0", "from the start event")


def test_low_ram_while_running_aborts() -> None:
    m = make()
    acts = m.handle(sample(101.0, 0.9, ram=GIB // 2))
    [incident] = only(acts, RecordIncident)
    assert incident.finding.rule == "ram_headroom"
    assert incident.finding.summary == "RAM 0.5 GB free while running, minimum 1 GB"
    assert only(acts, Terminate)


# -- user abort ---------------------------------------------------------------------------


def test_user_abort_terminates_and_finishes_aborted() -> None:
    m = make()
    train(m, 103.0)
    acts = m.handle(AbortRequested(104.0, "wrong lr", by="discord:alice"))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    incident = acts[0]
    assert isinstance(incident, RecordIncident)
    assert incident.finding.rule == "user_abort"
    assert incident.severity == "info"
    assert incident.finding.summary == "abort requested by discord:alice: wrong lr"
    # the abort request stays in the database and is read again: no second incident
    assert m.handle(AbortRequested(104.5, "wrong lr", by="discord:alice")) == []
    finish = m.handle(Exited(105.0, 0))[0]
    assert isinstance(finish, Finish)
    assert finish.status == "aborted"  # even though it exited 0 after its checkpoint
    assert finish.summary == "aborted: abort requested by discord:alice: wrong lr"


# -- the end ------------------------------------------------------------------------------


def test_nonzero_exit_fails_with_the_last_stderr_line() -> None:
    m = make()
    train(m, 103.0)
    stderr = "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n\n"
    acts = m.handle(Exited(104.0, 1, stderr))
    assert kinds(acts) == ["RecordIncident", "Finish", "Notify"]
    finish = only(acts, Finish)[0]
    assert finish.status == "failed"
    assert finish.summary == "failed: exit code 1: RuntimeError: CUDA out of memory"
    assert finish.result["stderr_tail"][-1] == "RuntimeError: CUDA out of memory"
    assert only(acts, RecordIncident)[0].finding.evidence["exit_code"] == 1


def test_killed_by_a_signal_says_which() -> None:
    m = make()
    finish = only(m.handle(Exited(104.0, -9, "")), Finish)[0]
    assert finish.summary == "failed: killed by SIGKILL: no output on stderr"


def test_clean_exit_with_a_missing_gate_fails_with_an_incident_per_failed_gate() -> None:
    m = make(gates={"avg_bit_acc": ">= 0.9", "not_acc": ">= 0.5", "loss": "<= 1"})
    m.handle(lines(101.0, {"step": 1, "loss": 0.2}))
    m.handle(lines(102.0, {"event": "end", "avg_bit_acc": 0.0}))
    acts = m.handle(Exited(103.0, 0))
    assert kinds(acts) == ["RecordIncident", "RecordIncident", "Finish", "Notify"]
    incidents = only(acts, RecordIncident)
    assert [i.finding.rule for i in incidents] == ["gates", "gates"]
    assert [i.finding.evidence["metric"] for i in incidents] == ["avg_bit_acc", "not_acc"]
    assert incidents[1].finding.summary == "not_acc: never reported (gate not_acc >= 0.5)"
    assert incidents[0].finding.mistake_ids == ("M-014",)
    finish = only(acts, Finish)[0]
    assert finish.status == "failed"
    assert finish.summary.startswith("failed gates: avg_bit_acc = 0 (FAIL")
    assert [g["passed"] for g in finish.result["gates"]] == [False, False, True]


def test_readopted_job_with_unknown_exit_code_is_clean_only_with_an_end_event() -> None:
    ended = make()
    ended.handle(lines(101.0, {"event": "end", "avg_bit_acc": 0.99}))
    assert only(ended.handle(Exited(102.0, None)), Finish)[0].status == "succeeded"

    vanished = make()
    vanished.handle(lines(101.0, {"step": 1, "avg_bit_acc": 0.99}))
    finish = only(vanished.handle(Exited(102.0, None)), Finish)[0]
    assert finish.status == "failed"
    assert finish.summary.startswith("failed: unknown exit status")


def test_events_after_the_end_are_ignored() -> None:
    m = make(gates={})
    m.handle(Exited(101.0, 0))
    assert m.status == "succeeded"
    for ev in (
        lines(102.0, {"step": 5, "loss": "nan"}),
        sample(102.0, 0.0, ram=0),
        Tick(1e6),
        AbortRequested(103.0, "late"),
        Exited(104.0, 1, "boom"),
    ):
        assert m.handle(ev) == []
    assert m.status == "succeeded"
    assert m.progress.step is None


# -- observations -------------------------------------------------------------------------


def test_garbage_lines_are_notified_once() -> None:
    m = make()
    acts = m.handle(MetricLines(101.0, [{"step": 1}], garbage=2, first_garbage="{oops"))
    [note] = only(acts, Notify)
    assert note.text == "metrics.jsonl: 2 unreadable line(s) skipped: {oops"
    assert note.alert is False
    assert m.handle(MetricLines(102.0, [], garbage=5, first_garbage="x")) == []
    assert m.handle(MetricLines(103.0, [], oversized=1)) == []
    assert m.progress.garbage == 7
    assert m.progress.oversized == 1
    assert m.status == "running"


def test_oversized_lines_alone_are_notified_once() -> None:
    m = make()
    [note] = m.handle(MetricLines(101.0, [], oversized=1))
    assert isinstance(note, Notify)
    assert note.text == "metrics.jsonl: 1 oversized line(s) skipped"
    assert m.handle(MetricLines(102.0, [], garbage=1)) == []


def test_progress_snapshot() -> None:
    m = make(gates={"avg_bit_acc": ">= 0.9"})
    m.handle(lines(100.0, {"event": "start", "total_steps": 100, "device": "cpu"}))
    for i in range(11):  # 2 steps per second
        t = 100.0 + i
        m.handle(lines(t, {"step": 2 * i, "loss": 1.0 - 0.05 * i, "avg_bit_acc": 0.05 * i}))
    m.handle(lines(110.5, {"event": "phase", "phase": "eval"}))
    m.handle(sample(110.5, 0.42, ram=3 * GIB))
    snap = m.progress.snapshot()
    assert snap["step"] == 20
    assert snap["total_steps"] == 100
    assert snap["rate"] == pytest.approx(2.0)
    assert snap["eta_s"] == pytest.approx(40.0)
    assert snap["phase"] == "eval"
    assert snap["loss_history"] == pytest.approx([1.0 - 0.05 * i for i in range(11)])
    assert snap["key_history"] == pytest.approx([0.05 * i for i in range(11)])
    assert snap["metrics"]["loss"] == pytest.approx(0.5)
    assert (snap["cpu_util"], snap["ram_available"]) == (0.42, 3 * GIB)
    assert snap["lines"] == 13


def test_key_metric_defaults_to_the_first_gate_and_can_be_set() -> None:
    assert make(gates={"b": ">= 1", "a": ">= 1"}).key_metric == "b"
    assert make("key_metric=acc").key_metric == "acc"
    assert make(gates={}).key_metric is None


def test_nan_loss_is_kept_out_of_the_history() -> None:
    m = make("watch.nonfinite=warn")
    m.handle(lines(101.0, {"step": 1, "loss": 0.5}, {"step": 2, "loss": "nan"}))
    assert m.progress.snapshot()["loss_history"] == [0.5]
    assert math.isnan(m.progress.metrics["loss"])


def test_controls_reports_are_kept() -> None:
    m = make()
    m.handle(lines(101.0, {"event": "controls", "applied": {"lr": 0.01}}))
    assert m.progress.controls == [{"event": "controls", "applied": {"lr": 0.01}}]


# -- untrusted metrics file and run dir, supervision lost (issue 10) ----------------------


def test_an_unreadable_metrics_file_is_one_incident_per_kind_and_the_stall_rule_fires() -> None:
    m = make()
    acts = m.handle(MetricLines(101.0, [], unreadable="a FIFO"))
    assert kinds(acts) == ["RecordIncident", "Notify"]
    incident = acts[0]
    assert isinstance(incident, RecordIncident)
    assert incident.finding.rule == "metrics_file" and incident.severity == "warn"
    assert incident.finding.evidence == {"file": "metrics.jsonl", "found": "a FIFO"}
    assert "metrics.jsonl is a FIFO" in only(acts, Notify)[0].text
    assert m.handle(MetricLines(102.0, [], unreadable="a FIFO")) == []  # said once
    other = m.handle(MetricLines(103.0, [], unreadable="a symlink to /etc/passwd"))
    assert kinds(other) == ["RecordIncident", "Notify"]  # something else: said again
    assert m.status == "running"
    stall = m.handle(Tick(131.0))  # 30 s after launch with no line: the usual stall
    assert kinds(stall) == ["RecordIncident", "Notify", "Terminate"]
    assert only(stall, RecordIncident)[0].finding.rule == "stall"


def test_a_vanished_run_dir_fails_as_what_it_is_not_as_an_exit_code() -> None:
    m = make()
    train(m, 103.0)
    acts = m.handle(Exited(104.0, 0, "", vanished="/state/runs/r1"))
    assert kinds(acts) == ["RecordIncident", "Finish", "Notify"]
    incident, finish = acts[0], acts[1]
    assert isinstance(incident, RecordIncident) and isinstance(finish, Finish)
    summary = "the run directory /state/runs/r1 vanished while the job ran; its exit status was 0"
    assert incident.finding.rule == "run_dir" and incident.finding.summary == summary
    assert finish.status == "failed" and finish.summary == f"failed: {summary}"
    assert finish.result["exit_code"] == 0
    unknown = make().handle(Exited(104.0, None, vanished="/d"))[1]
    assert isinstance(unknown, Finish) and unknown.summary.endswith("its exit status unknown")


def test_a_run_being_aborted_stays_aborted_when_its_dir_vanished() -> None:
    m = make()
    m.handle(AbortRequested(101.0, "stop"))
    (finish, _) = m.handle(Exited(102.0, 0, vanished="/d"))
    assert isinstance(finish, Finish) and finish.status == "aborted"


def test_supervision_lost_stops_the_job_with_the_cause() -> None:
    m = make()
    cause = "the store /s/harness.db has failed for 61 s (limit 60 s)"
    acts = m.handle(SupervisionLost(101.0, cause, {"failing_s": 61.0}))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    incident = acts[0]
    assert isinstance(incident, RecordIncident)
    assert incident.finding.rule == "supervision" and incident.severity == "error"
    assert incident.finding.summary == f"supervision cannot continue: {cause}"
    assert incident.finding.evidence == {"failing_s": 61.0}
    assert m.handle(SupervisionLost(102.0, cause)) == []  # once
    finish = m.handle(Exited(103.0, 0))[0]
    assert isinstance(finish, Finish) and finish.status == "aborted"
    assert finish.summary == f"aborted: supervision cannot continue: {cause}"


def test_absurd_values_in_lines_never_raise() -> None:
    m = make(device="auto")  # so that the start event's device is taken
    huge = 10**4000
    acts = m.handle(
        lines(
            101.0,
            {"event": "start", "total_steps": huge, "device": "x" * 10_000},
            {"event": "phase", "phase": "p" * 10_000},
            {"step": 1, "loss": 0.5},
            {"step": 2**80, "grad_norm": [1, {"a": None}]},
            {"step": 3, "loss": 0.4},
            {"step": huge, "loss": huge},
        )
    )
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]  # the huge loss is inf
    finding = only(acts, RecordIncident)[0].finding
    assert finding.summary == "loss is inf"  # a step that is no step count is not shown
    assert finding.evidence["step"] is None
    p = m.progress
    assert p.total_steps is None
    assert len(p.device) == 64 and len(p.phase) == 64
    assert p.step == 3  # neither 2**80 nor the huge one was taken as a step
    assert p.snapshot()["metrics"]["loss"] == math.inf


# -- GPU jobs: the device as resolved, judged GPU by GPU ---------------------------------


def gpus(
    sm: dict[int, float], *, held: Sequence[int] = (), util: float = 1.0, mem: float = 0.5
) -> tuple[GpuReading, ...]:
    """GPUs at the given SM activity (util pinned), ``held`` by the job, memory ``mem`` full."""
    return tuple(
        GpuReading(i, util, b, int(mem * 80 * GIB), 80 * GIB, held=i in held) for i, b in sm.items()
    )


def run_gpu(
    m: RunMachine,
    t0: float,
    until: float,
    readings: tuple[GpuReading, ...],
    *,
    cpu: float = 0.06,
) -> list[Action]:
    """A job writing a step a second and sampled once a second, its GPUs read as given."""
    out: list[Action] = []
    t = t0
    while t <= until and not m.done and m.status == "running":
        out += m.handle(lines(t, {"step": int(t)}))
        out += m.handle(sample(t, cpu, gpus=readings, cpu_available=cpu))
        t += 1.0
    return out


def test_auto_resolves_by_nvml_attribution_and_a_busy_gpu_at_low_cpu_runs_on() -> None:
    m = make(device="auto")
    assert m.device == "auto"
    acts = run_gpu(m, 100.0, 101.0, gpus({0: 0.97, 1: 0.0}, held=[0]))
    assert (m.device, m.device_by) == ("cuda:0", "attributed by NVML")
    acts += run_gpu(m, 102.0, 140.0, gpus({0: 0.97, 1: 0.0}, held=[0]))
    assert acts == []  # CPU at 6 % the whole time; GPU 1 idle but not the job's
    assert m.status == "running"
    snap = m.progress.snapshot()
    assert (snap["device"], snap["device_by"]) == ("cuda:0", "attributed by NVML")
    assert [g["index"] for g in snap["gpus"]] == [0]


def test_the_gpu_set_grows_as_ranks_start() -> None:
    m = make(device="auto")
    run_gpu(m, 100.0, 103.0, gpus({0: 0.97, 1: 0.0}, held=[0]))
    assert m.device == "cuda:0"
    run_gpu(m, 104.0, 105.0, gpus({0: 0.97, 1: 0.95}, held=[0, 1]))
    assert m.device == "cuda:0,1"
    assert [g["index"] for g in m.progress.gpus] == [0, 1]


def test_auto_without_a_gpu_context_is_cpu_once_the_grace_period_ends() -> None:
    m = make(device="auto")
    acts = run_gpu(m, 100.0, 109.0, gpus({0: 0.0}), cpu=0.05)
    assert m.device == "auto" and acts == []
    acts = run_gpu(m, 110.0, 130.0, gpus({0: 0.0}), cpu=0.05)
    assert (m.device, m.device_by) == ("cpu", "no GPU context after the grace period")
    [incident] = only(acts, RecordIncident)
    assert incident.finding.summary.endswith(
        "(running incl. waiting for a CPU; device cpu, no GPU context after the grace period)"
    )


def test_a_gpu_context_after_the_grace_period_makes_it_a_gpu_job() -> None:
    m = make("watch.min_util=0.04", device="auto")
    run_gpu(m, 100.0, 111.0, gpus({0: 0.0}), cpu=0.05)
    assert m.device == "cpu"
    acts = run_gpu(m, 112.0, 140.0, gpus({0: 0.95}, held=[0]), cpu=0.01)
    assert (m.device, m.device_by) == ("cuda:0", "attributed by NVML")
    assert acts == []  # judged by the busy GPU, not by the CPU at 1 %


def test_the_start_event_comes_before_attribution() -> None:
    m = make(device="auto")
    m.handle(lines(100.0, {"event": "start", "total_steps": 10, "device": "cpu"}))
    run_gpu(m, 100.0, 102.0, gpus({0: 0.97}, held=[0]))
    assert (m.device, m.device_by) == ("cpu", "from the start event")


def test_one_idle_gpu_of_four_aborts_naming_it_after_the_early_warning() -> None:
    m = make(device="auto")
    four = gpus({0: 0.97, 1: 0.04, 2: 0.96, 3: 0.98}, held=[0, 1, 2, 3])
    acts = run_gpu(m, 100.0, 130.0, four)
    assert kinds(acts) == ["Notify", "RecordIncident", "Notify", "Terminate"]
    warning, incident = acts[0], acts[1]
    assert isinstance(warning, Notify) and warning.alert
    assert warning.text == (
        "echo: warning: GPU 1 at 4 % SM activity for 2.5 s (threshold 80 %); "
        "aborting in 2.5 s unless it recovers"
    )
    assert isinstance(incident, RecordIncident)
    f = incident.finding
    assert f.summary == (
        "GPU 1 at 4 % SM activity over 5 s, threshold 80 % "
        "(mean of 4 GPUs 74 %; device cuda:0,1,2,3, attributed by NVML)"
    )
    assert (f.evidence["gpu"], f.evidence["source"]) == (1, "sm_activity")
    assert f.evidence["device"] == "cuda:0,1,2,3"
    assert f.evidence["how"] == "attributed by NVML"


def test_the_warning_is_sent_once_per_episode_and_rearmed_after_recovery() -> None:
    m = make("watch.util_window_s=10", device="cuda:0")
    idle, busy = gpus({0: 0.1}, held=[0]), gpus({0: 1.0}, held=[0])
    acts = run_gpu(m, 100.0, 115.0, idle)  # warned at 115: grace 10 + half the window
    assert [a.text for a in only(acts, Notify)] == [
        "echo: warning: GPU 0 at 10 % SM activity for 5 s (threshold 80 %); "
        "aborting in 5 s unless it recovers"
    ]
    assert run_gpu(m, 116.0, 130.0, busy) == []  # it recovered in time: no abort, re-armed
    acts = run_gpu(m, 131.0, 136.0, idle)
    assert kinds(acts) == ["Notify"]  # the second low episode is warned again, once
    assert "aborting in 5 s unless it recovers" in only(acts, Notify)[0].text
    acts = run_gpu(m, 137.0, 141.0, idle)
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]  # a whole window low


def test_the_figure_shown_is_the_figure_judged() -> None:
    # CPU: the rule judges running + waiting (98 %), the status line shows it, with the
    # plain running share (30 %) beside it, labelled
    m = make(device="cpu")
    m.handle(sample(100.0, 0.30, cpu_available=0.98))
    judged = m.util.samples()[-1]
    assert (judged.util, judged.source) == (0.98, "running + waiting")
    snap = m.progress.snapshot()
    assert (snap["util"], snap["util_source"]) == (judged.util, judged.source)
    line = progress_line("echo", "running", snap, None)
    assert "CPU 98% incl. waiting (running 30%)" in line
    # GPU: SM activity per GPU, util beside it
    g = make(device="cuda:0")
    g.handle(sample(100.0, 0.01, gpus=gpus({0: 0.04}, util=1.0, held=[0])))
    [reading] = g.util.samples()[-1].gpus
    snap = g.progress.snapshot()
    assert snap["gpus"][0]["busy"] == reading.busy == 0.04
    assert snap["util"] == g.util.samples()[-1].util == 0.04
    assert "GPU0 4% SM (util 100%) 40.0/80.0 GB" in progress_line("echo", "running", snap, None)


def test_the_incident_figure_is_the_mean_of_the_figures_shown() -> None:
    m = make(device="cpu")
    shown: list[float] = []
    acts: list[Action] = []
    for i in range(20):
        t = 100.0 + i
        acts += m.handle(lines(t, {"step": i}))
        acts += m.handle(sample(t, 0.01, cpu_available=0.2 + 0.01 * (i % 3)))
        shown.append(m.progress.util or 0.0)
        if m.status != "running":
            break
    [incident] = only(acts, RecordIncident)
    n = incident.finding.evidence["samples"]
    assert incident.finding.evidence["figure"] == pytest.approx(sum(shown[-n:]) / n, abs=1e-4)


def test_a_gpu_job_whose_utilisation_cannot_be_read_is_aborted_with_the_reason() -> None:
    m = make(device="auto")
    m.handle(lines(100.0, {"event": "start", "total_steps": 10, "device": "cuda"}))
    reason = "NVML could not start: NVMLError_DriverNotLoaded: Driver Not Loaded"
    acts: list[Action] = []
    for i in range(8):
        t = 100.0 + i
        acts += m.handle(lines(t, {"step": i}))
        acts += m.handle(sample(t, 0.9, gpu_error=reason))
    assert kinds(acts) == ["RecordIncident", "Notify", "Terminate"]
    f = only(acts, RecordIncident)[0].finding
    assert f.rule == "gpu_probe"
    assert f.summary == f"no readable GPU utilisation for 5 s on cuda: {reason}"
    assert f.mistake_ids == ("M-015",)


def test_an_optional_gpu_probe_warns_once_and_the_run_goes_on() -> None:
    m = make("watch.gpu_probe=optional", device="cuda:0")
    acts: list[Action] = []
    for i in range(30):
        t = 100.0 + i
        acts += m.handle(lines(t, {"step": i}))
        acts += m.handle(sample(t, 0.9, gpu_error="NVML gone"))
    assert kinds(acts) == ["RecordIncident", "Notify"]
    assert only(acts, RecordIncident)[0].severity == "warn"
    assert m.status == "running"


def test_gpu_memory_near_the_limit_warns_once_and_never_aborts() -> None:
    m = make("watch.min_util=0", device="cuda:0")
    acts = run_gpu(m, 100.0, 130.0, gpus({0: 0.9}, held=[0], mem=0.97))
    assert kinds(acts) == ["RecordIncident", "Notify"]
    [incident] = only(acts, RecordIncident)
    assert incident.finding.rule == "gpu_memory" and incident.severity == "warn"
    assert incident.finding.summary == "GPU 0 memory 77.6/80.0 GB (97 %), warning at 95 %"
    assert m.status == "running"
    snap = m.progress.snapshot()
    assert (snap["vram_used"], snap["vram_total"]) == (int(0.97 * 80 * GIB), 80 * GIB)
