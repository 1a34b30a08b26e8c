"""The run state machine: events in, actions out, the clock passed in (DESIGN section 5).

``RunMachine`` holds what has been observed of one running job and decides; it never
touches a process, a file or a clock. The shell (``harness.runtime.supervisor``) turns the world
into events (metric lines, probe samples, ticks, the process exiting, an abort request)
and carries out the actions it returns (terminate the tree, record an incident, send an
alert, finish the run).

Every event is data from the job or the OS and is not trusted: no value in a metrics
line, however odd (huge integers, non-finite numbers, very long text), makes ``handle``
raise. The utilisation rules, with the device they judge and the state they keep between
events, are :class:`~harness.core.utilisation.UtilWatch`. States handled here:
``running -> aborting -> aborted`` and ``running -> succeeded | failed``. The earlier
states (queued, preflight, starting) and ``lost`` belong to the shell, which decides them
before or instead of a machine.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from harness.core.alerts import JobAlerts
from harness.core.detectors import Detectors, Symptom
from harness.core.devices import GpuReading
from harness.core.diagnose import FindingView, card, card_embed, diagnose, explain, gated_up
from harness.core.format import exit_status
from harness.core.rules import (
    Finding,
    GateResult,
    check_gates,
    check_gpu_memory,
    check_metrics_file,
    check_nonfinite,
    check_ram,
    check_scheduler_end,
    check_stall,
)
from harness.core.spec import RunSpec
from harness.core.utilisation import UtilWatch
from harness.core.values import as_float
from memory import TERMINAL, clip

__all__ = [
    "AbortRequested",
    "Action",
    "Began",
    "Event",
    "Exited",
    "Finish",
    "GpuReading",
    "MetricLines",
    "Notify",
    "ProbeSample",
    "Queued",
    "RecordIncident",
    "Relaunch",
    "RunMachine",
    "SupervisionLost",
    "Terminate",
    "Tick",
]

_HISTORY = 60  # points kept for trends and sparklines
_MAX_STEP = 2**63  # a step or total beyond this is not a step count
_LABEL_CHARS = 64  # a phase or device name reported by the job


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricLines:
    t: float
    records: Sequence[Mapping[str, Any]]
    garbage: int = 0
    oversized: int = 0
    first_garbage: str | None = None
    # what stands where metrics.jsonl should be, when it is not a regular file in the run
    # dir ("a FIFO", "a symlink to /etc/passwd"); no lines can come from it
    unreadable: str | None = None


@dataclass(frozen=True)
class ProbeSample:
    t: float
    cpu_util: float | None  # the job's tree as a fraction of the machine
    ram_available: int | None  # bytes, cgroup-aware
    gpu_busy: float | None = None  # SM activity, else utilisation, of the job's GPUs
    vram_used: int | None = None
    vram_total: int | None = None
    # how much of the machine the job wanted: running plus runnable-but-waiting (the
    # probe's available_util); what the utilisation rule judges a CPU job by, so a busy
    # job starved by other load is not called wasteful
    cpu_available: float | None = None
    # every GPU NVML read, ``held`` where a process of the job has a context on it: how an
    # ``auto`` job is resolved and how a GPU job is judged, GPU by GPU
    gpus: tuple[GpuReading, ...] = ()
    gpu_error: str | None = None  # why there are no GPU readings ("NVML could not start: ...")


@dataclass(frozen=True)
class Tick:
    t: float


@dataclass(frozen=True)
class Exited:
    t: float
    code: int | None  # None when unknown (a re-adopted job whose exit status was not kept)
    stderr_tail: str = ""
    vanished: str | None = None  # the run dir's path, when it was gone once the job ended
    # how a scheduler says the job ended ("COMPLETED", "TIMEOUT", "OUT_OF_MEMORY", ...) and
    # its own words on it; None for a job the harness started itself
    scheduler_state: str | None = None
    scheduler_detail: str = ""


@dataclass(frozen=True)
class Queued:
    """A scheduler holds the job (Slurm's PENDING): queue time, which no rule judges."""

    t: float
    reason: str  # the scheduler's: "Resources", "Priority", "JobHeldUser"
    waited_s: float  # how long it has been waiting, by the scheduler's clock


@dataclass(frozen=True)
class Began:
    """The scheduler started the job: the grace period and the stall clock start now."""

    t: float
    where: str = ""  # the nodes it runs on


@dataclass(frozen=True)
class AbortRequested:
    t: float
    reason: str
    by: str = "user"


@dataclass(frozen=True)
class SupervisionLost:
    """The shell cannot go on supervising (its store has failed too long): stop the job."""

    t: float
    cause: str  # one line: "the store has failed for 61 s: OperationalError: disk I/O error"
    evidence: Mapping[str, Any] = field(default_factory=dict)


Event = (
    MetricLines | ProbeSample | Tick | Exited | AbortRequested | SupervisionLost | Queued | Began
)


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Terminate:
    reason: str
    restart: bool = False  # a rollback: the job is stopped to be started again (Relaunch)


@dataclass(frozen=True)
class RecordIncident:
    finding: Finding
    severity: str
    action: str


@dataclass(frozen=True)
class Notify:
    text: str
    alert: bool = True  # alerts go out at once; others wait for the heartbeat
    # a Discord embed to send instead of the plain text where the shell can (the card)
    embed: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Relaunch:
    """Start the job again, resumed from ``checkpoint``, with these controls written first."""

    checkpoint: str
    controls: Mapping[str, Any]
    attempt: int


@dataclass(frozen=True)
class Finish:
    status: str
    summary: str
    result: dict[str, Any]


Action = Terminate | RecordIncident | Notify | Finish | Relaunch


# -- the machine ------------------------------------------------------------------------


@dataclass
class Progress:
    """What is known of the run now; the status line and the heartbeat read it."""

    phase: str = "train"
    device: str = "auto"  # as resolved: "cuda:0,1", "cpu", "auto" while unresolved
    device_by: str = ""  # how: "attributed by NVML", "from the start event", ...
    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # latest numeric value per key
    final: dict[str, Any] = field(default_factory=dict)  # from the `end` event
    loss_history: deque[float] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    key_history: deque[float] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    step_times: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    lines: int = 0
    garbage: int = 0
    oversized: int = 0
    cpu_util: float | None = None
    cpu_available: float | None = None
    gpu_busy: float | None = None
    util: float | None = None  # the figure the utilisation rule judges, now
    util_source: str = ""  # which figure it is: "running + waiting", "sm_activity", ...
    gpus: list[dict[str, Any]] = field(default_factory=list)  # the judged GPUs, now
    ram_available: int | None = None
    vram_used: int | None = None
    vram_total: int | None = None
    last_line_at: float = 0.0
    ended: bool = False
    controls: list[dict[str, Any]] = field(default_factory=list)  # applied/rejected reports
    # a scheduler's view, for a job it runs: {"queued_s": 240, "reason": "Resources"} while
    # it waits (None once it began), {"where": "node1"} once it runs
    queued: dict[str, Any] | None = None
    where: str = ""
    diagnosis: list[str] = field(default_factory=list)  # the live findings' headlines
    attempts: list[dict[str, Any]] = field(default_factory=list)  # the rollbacks so far

    def rate(self) -> float | None:
        """Steps per second over the recent step lines."""
        if len(self.step_times) < 2:
            return None
        (t0, s0), (t1, s1) = self.step_times[0], self.step_times[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate is None or self.step is None or self.total_steps is None:
            return None
        return max(self.total_steps - self.step, 0) / rate

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly view for the database, the status line and heartbeats."""
        return {
            "phase": self.phase,
            "device": self.device,
            "device_by": self.device_by,
            "step": self.step,
            "total_steps": self.total_steps,
            "rate": self.rate(),
            "eta_s": self.eta_s(),
            "metrics": dict(self.metrics),
            "loss_history": list(self.loss_history),
            "key_history": list(self.key_history),
            "lines": self.lines,
            "garbage": self.garbage,
            "oversized": self.oversized,
            "cpu_util": self.cpu_util,
            "cpu_available": self.cpu_available,
            "gpu_busy": self.gpu_busy,
            "util": self.util,
            "util_source": self.util_source,
            "gpus": [dict(g) for g in self.gpus],
            "ram_available": self.ram_available,
            "vram_used": self.vram_used,
            "vram_total": self.vram_total,
            "queued": dict(self.queued) if self.queued is not None else None,
            "where": self.where,
            "diagnosis": list(self.diagnosis),
            "attempts": [dict(a) for a in self.attempts],
        }


class RunMachine:
    """Decides, for one run, when to abort and how it ended."""

    def __init__(self, spec: RunSpec, *, started_at: float) -> None:
        self.spec = spec
        self.cfg = spec.watch
        self.gates = spec.parsed_gates()
        self.key_metric = spec.shown_metric
        self.started_at = started_at
        self.status = "running"
        self.abort_reason: str | None = None
        self.util = UtilWatch(spec.device, self.cfg, started_at=started_at)
        self.progress = Progress(
            device=self.util.device, device_by=self.util.device_by, last_line_at=started_at
        )
        self._warned: set[str] = set()
        self._bad_files: set[str] = set()  # what was found in place of metrics.jsonl
        # the live diagnosis (DESIGN section 12): the same detectors as `harness diagnose`
        self.detectors = Detectors(gated_up=gated_up(spec.gates))
        self.alerts = JobAlerts()  # the job's own alerts (Reporter.alert)
        self.rollbacks = 0
        self._restart: Relaunch | None = None  # decided; carried out once the job is gone
        self.waiting = False  # queued by a scheduler: nothing is judged until it begins

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def device(self) -> str:
        """The device as resolved (``cuda:0,1``, ``cpu``; ``auto`` while unresolved)."""
        return self.util.device

    @property
    def device_by(self) -> str:
        """How the device was resolved (``attributed by NVML``, ``from the spec``, ...)."""
        return self.util.device_by

    def _show_device(self) -> None:
        self.progress.device, self.progress.device_by = self.device, self.device_by

    def handle(self, event: Event) -> list[Action]:
        if self.done:
            return []
        if isinstance(event, MetricLines):
            return self._on_lines(event)
        if isinstance(event, ProbeSample):
            return self._on_sample(event)
        if isinstance(event, Tick):
            return self._on_tick(event.t)
        if isinstance(event, Queued):
            self.waiting = True
            self.progress.queued = {"queued_s": round(event.waited_s), "reason": event.reason}
            return []
        if isinstance(event, Began):
            return self._on_began(event)
        if isinstance(event, AbortRequested):
            finding = Finding(
                "user_abort", "abort", f"abort requested by {event.by}: {event.reason}", {}
            )
            return self._abort(finding, severity="info")
        if isinstance(event, SupervisionLost):
            finding = Finding(
                "supervision",
                "abort",
                f"supervision cannot continue: {event.cause}",
                dict(event.evidence),
            )
            return self._abort(finding, severity="error")
        return self._on_exit(event)

    # -- observations -----------------------------------------------------------------

    def _on_lines(self, ev: MetricLines) -> list[Action]:
        p = self.progress
        actions: list[Action] = []
        if ev.records:
            p.last_line_at = ev.t
        p.lines += len(ev.records)
        p.oversized += ev.oversized
        if ev.unreadable is not None and ev.unreadable not in self._bad_files:
            self._bad_files.add(ev.unreadable)
            finding = check_metrics_file(ev.unreadable)
            actions += [
                RecordIncident(finding, "warn", "kept watching; the stall rule still applies"),
                Notify(f"{self.spec.name}: warning: {finding.summary}"),
            ]
        if ev.garbage or ev.oversized:
            first = not (p.garbage or self._warned & {"garbage"})
            p.garbage += ev.garbage
            if first and "garbage" not in self._warned:
                self._warned.add("garbage")
                what = f"{ev.garbage} unreadable" if ev.garbage else f"{ev.oversized} oversized"
                excerpt = f": {ev.first_garbage}" if ev.first_garbage else ""
                actions.append(
                    Notify(f"metrics.jsonl: {what} line(s) skipped{excerpt}", alert=False)
                )
        for rec in ev.records:
            actions += self._on_record(rec, ev.t)
            if self.status != "running":
                break
        return actions

    def _on_record(self, rec: Mapping[str, Any], t: float) -> list[Action]:
        p = self.progress
        event = rec.get("event")
        if event == "start":
            total = rec.get("total_steps")
            if _is_count(total) and total > 0:
                p.total_steps = total
            named = rec.get("device")
            if isinstance(named, str):
                self.util.start_event(clip(named, _LABEL_CHARS))
                self._show_device()
        elif event == "phase" and isinstance(rec.get("phase"), str):
            p.phase = clip(rec["phase"], _LABEL_CHARS)
        elif event == "end":
            p.ended = True
            p.final.update({k: v for k, v in rec.items() if k not in ("event", "t")})
        elif event == "controls":
            p.controls.append({k: v for k, v in rec.items() if k != "t"})
        elif event == "alert":
            return self._on_alert(rec, t)
        step = rec.get("step")
        if _is_count(step) and event is None:
            p.step = step
            p.step_times.append((t, step))
        for key, value in rec.items():
            if key in ("t", "step", "event"):
                continue
            number = as_float(value)
            if number is not None:
                p.metrics[key] = number
                if key == "loss" and math.isfinite(number):
                    p.loss_history.append(number)
                if key == self.key_metric and math.isfinite(number):
                    p.key_history.append(number)
        actions = self._diagnose(self.detectors.feed(rec))
        if self.status != "running":
            return actions
        finding = check_nonfinite(rec, self.cfg)
        if finding is None:
            return actions
        if finding.level == "abort":
            return actions + self._abort(finding)
        return actions + self._warn_once(finding)

    def _on_alert(self, rec: Mapping[str, Any], t: float) -> list[Action]:
        """The job's own alert: an incident and a message at once (rate-limited)."""
        taken = self.alerts.take(rec, t)
        if taken is None:
            return []
        finding, severity = taken
        return [
            RecordIncident(finding, severity, "sent to Discord at once"),
            Notify(f"{self.spec.name}: {finding.summary}", alert=True),
        ]

    def _diagnose(self, symptoms: Sequence[Symptom]) -> list[Action]:
        """The policy of each new symptom: a warning with its diagnosis, or an abort.

        ``nonfinite`` and ``stall`` are the watch rules' to act on; here they are only
        explained (in the final diagnosis).
        """
        actions: list[Action] = []
        for s in symptoms:
            policy = getattr(self.spec.diagnose, s.symptom, "off")
            if policy == "off" or self.status != "running":
                continue
            view = explain(s, self.detectors.context, self.detectors.symptoms)
            self.progress.diagnosis.append(clip(view.headline, 200))
            level: Literal["warn", "abort"] = "abort" if policy == "abort" else "warn"
            finding = Finding(s.symptom, level, view.headline, {"diagnosis": view.to_json()})
            if policy == "rollback":
                actions += self._rollback(s, view, finding)
            elif policy == "abort":
                actions += self._abort(finding)
            else:
                actions += [
                    RecordIncident(finding, "warn", "warned with the diagnosis"),
                    Notify(
                        f"{self.spec.name}: {card(view)}",
                        alert=True,
                        embed=card_embed(self.spec.name, view),
                    ),
                ]
        return actions

    def _rollback(self, s: Symptom, view: FindingView, finding: Finding) -> list[Action]:
        """Stop the job to resume it from the last checkpoint before the onset, lr scaled;
        an abort when there is no such checkpoint or the rollbacks are used up."""
        cfg = self.spec.diagnose.rollback
        onset = s.step if s.step is not None else (self.progress.step or 0)
        before = [c for c in self.detectors.context.checkpoints if c[0] < onset]
        if not before or self.rollbacks >= cfg.max:
            why = "no checkpoint before the onset" if not before else f"{cfg.max} rollback(s) used"
            stop = Finding(
                s.symptom,
                "abort",
                f"{view.headline}; not rolled back: {why}",
                dict(finding.evidence),
            )
            return self._abort(stop)
        step, path, lr = before[-1]
        self.rollbacks += 1
        controls: dict[str, Any] = {}
        shown = ""
        if lr is not None:
            controls["lr"] = lr * cfg.lr_factor
            shown = f" with lr {controls['lr']:.3g} ({cfg.lr_factor:g} x {lr:.3g})"
        attempt = f"rollback {self.rollbacks} of {cfg.max}"
        summary = (
            f"{view.headline}; rolling back to the checkpoint at step {step}{shown} ({attempt})"
        )
        self._restart = Relaunch(path, controls, self.rollbacks)
        self.status = "restarting"
        self.progress.attempts.append(
            {
                "rollback": self.rollbacks,
                "symptom": s.symptom,
                "onset": s.step,
                "checkpoint": path,
                "checkpoint_step": step,
                **controls,
            }
        )
        evidence = {**finding.evidence, "checkpoint": path, "checkpoint_step": step, **controls}
        return [
            RecordIncident(Finding(s.symptom, "warn", summary, evidence), "warn", attempt),
            Notify(
                f"{self.spec.name}: {summary}", alert=True, embed=card_embed(self.spec.name, view)
            ),
            Terminate(summary, restart=True),
        ]

    def _on_began(self, ev: Began) -> list[Action]:
        """The job left the queue (again, after a requeue): its clocks start now."""
        self.waiting = False
        self.started_at = ev.t
        self.util = UtilWatch(self.spec.device, self.cfg, started_at=ev.t)
        p = self.progress
        p.queued, p.where, p.last_line_at = None, clip(ev.where, _LABEL_CHARS), ev.t
        self._show_device()
        return []

    def _on_sample(self, ev: ProbeSample) -> list[Action]:
        if self.waiting:  # a sample of a queued job has nothing of the job in it
            return []
        p = self.progress
        p.cpu_util, p.cpu_available = ev.cpu_util, ev.cpu_available
        p.ram_available = ev.ram_available
        shown = self.util.observe(
            ev.t,
            p.phase,
            cpu_util=ev.cpu_util,
            cpu_available=ev.cpu_available,
            gpus=ev.gpus,
            gpu_busy=ev.gpu_busy,
            vram_used=ev.vram_used,
            vram_total=ev.vram_total,
            gpu_error=ev.gpu_error,
        )
        self._show_device()
        p.util, p.util_source, p.gpus = shown.util, shown.source, shown.gpus
        p.gpu_busy, p.vram_used, p.vram_total = shown.gpu_busy, shown.vram_used, shown.vram_total
        if ev.ram_available is not None:
            ram = check_ram(ev.ram_available, self.cfg, before_launch=False)
            if ram.level == "abort":
                return self._abort(ram)
        actions: list[Action] = []
        memory = check_gpu_memory(shown.judged, self.cfg)
        if memory is not None:
            actions += self._warn_once(memory)
        return actions + self._on_tick(ev.t)

    def _on_tick(self, now: float) -> list[Action]:
        if self.status != "running" or self.waiting:
            return []
        stall = check_stall(self.progress.last_line_at, now=now, cfg=self.cfg)
        if stall is not None:
            return self._abort(stall)
        verdict = self.util.decide(now)
        self._show_device()
        if verdict.abort is not None:
            return self._abort(verdict.abort)
        if verdict.warn is not None:
            return self._warn_once(verdict.warn)
        if verdict.alert is not None:
            return [Notify(f"{self.spec.name}: warning: {verdict.alert.summary}", alert=True)]
        return []

    # -- decisions --------------------------------------------------------------------

    def _warn_once(self, finding: Finding) -> list[Action]:
        if finding.rule in self._warned:
            return []
        self._warned.add(finding.rule)
        return [
            RecordIncident(finding, "warn", "warned"),
            Notify(f"{self.spec.name}: warning: {finding.summary}"),
        ]

    def _abort(self, finding: Finding, *, severity: str = "abort") -> list[Action]:
        if self.status not in ("running", "restarting"):
            return []
        self._restart = None  # an abort while a rollback stops the job: it stays stopped
        self.status = "aborting"
        self.abort_reason = finding.summary
        return [
            RecordIncident(finding, severity, "aborted the run (SIGINT, then SIGTERM, SIGKILL)"),
            Notify(f"{self.spec.name}: aborting: {finding.summary}"),
            Terminate(finding.summary),
        ]

    def _on_exit(self, ev: Exited) -> list[Action]:
        p = self.progress
        if self.status == "restarting" and self._restart is not None:
            restart, self._restart = self._restart, None
            self.status = "running"  # the same run, its job started again
            self.started_at = ev.t
            self.util = UtilWatch(self.spec.device, self.cfg, started_at=ev.t)
            self.detectors = Detectors(gated_up=gated_up(self.spec.gates))
            p.last_line_at, p.ended = ev.t, False
            return [restart]
        final = {**p.metrics, **{k: v for k, v in p.final.items()}}
        self.detectors.close()
        result: dict[str, Any] = {"exit_code": ev.code, "final": final}
        found = diagnose(self.detectors)
        if found.findings:  # what went wrong, kept with the run (a healthy one needs none)
            result["diagnosis"] = found.to_json()
        if self.status == "aborting":
            self.status = "aborted"
            summary = f"aborted: {self.abort_reason}"
            return [Finish("aborted", summary, result), Notify(f"{self.spec.name}: {summary}")]
        ended_by = check_scheduler_end(ev.scheduler_state, ev.scheduler_detail, ev.code)
        if ended_by is not None:
            self.status = "failed"
            summary = f"failed: {ended_by.summary}"
            tail = ev.stderr_tail.strip().splitlines()
            result["stderr_tail"] = tail[-20:]
            result["scheduler_state"] = ev.scheduler_state
            return [
                RecordIncident(ended_by, "error", "none: the scheduler ended the job"),
                Finish("failed", summary, result),
                Notify(f"{self.spec.name}: {summary}"),
            ]
        if ev.vanished is not None:
            self.status = "failed"
            status = "unknown" if ev.code is None else f"was {ev.code}"
            summary = (
                f"the run directory {ev.vanished} vanished while the job ran; "
                f"its exit status {status}"
            )
            evidence = {"run_dir": ev.vanished, "exit_code": ev.code}
            return [
                RecordIncident(Finding("run_dir", "abort", summary, evidence), "error", "none"),
                Finish("failed", f"failed: {summary}", result),
                Notify(f"{self.spec.name}: failed: {summary}"),
            ]
        clean = ev.code == 0 or (ev.code is None and p.ended)
        if not clean:
            self.status = "failed"
            tail = ev.stderr_tail.strip().splitlines()
            last = tail[-1][:300] if tail else "no output on stderr"
            code = "unknown exit status" if ev.code is None else exit_status(ev.code)
            summary = f"failed: {code}: {last}"
            finding = Finding(
                "exit", "abort", summary, {"exit_code": ev.code, "stderr": tail[-20:]}
            )
            result["stderr_tail"] = tail[-20:]
            return [
                RecordIncident(finding, "error", "none: the job ended by itself"),
                Finish("failed", summary, result),
                Notify(f"{self.spec.name}: {summary}"),
            ]
        results = check_gates(self.gates, final)
        result["gates"] = [_gate_dict(r) for r in results]
        failed = [r for r in results if not r.passed]
        if not failed:
            self.status = "succeeded"
            shown = "; ".join(r.describe() for r in results) or "no gates declared"
            # said at once too (with its chart, in the daemon): the end is news on a phone
            return [
                Finish("succeeded", f"succeeded: {shown}", result),
                Notify(f"{self.spec.name}: succeeded: {shown}"),
            ]
        self.status = "failed"
        summary = "failed gates: " + "; ".join(r.describe() for r in failed)
        actions: list[Action] = [
            RecordIncident(
                Finding("gates", "abort", r.describe(), _gate_dict(r)), "error", "run failed"
            )
            for r in failed
        ]
        return [*actions, Finish("failed", summary, result), Notify(f"{self.spec.name}: {summary}")]


def _is_count(v: Any) -> TypeGuard[int]:
    """An int (not a bool) small enough to be a step count."""
    return isinstance(v, int) and not isinstance(v, bool) and -_MAX_STEP < v < _MAX_STEP


def _gate_dict(r: GateResult) -> dict[str, Any]:
    return {"metric": r.gate.metric, "gate": str(r.gate), "value": r.value, "passed": r.passed}
