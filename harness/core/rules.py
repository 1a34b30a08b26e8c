"""The checklist as pure functions (DESIGN section 5).

Each rule takes what the supervisor has observed and a clock value and returns a
:class:`Finding` (or None when it has nothing to say yet). No I/O, no clock reads: the
state machine and the tests call them with plain values. Every finding carries the
numbers that decided it and the mistake ids it guards against.

Utilisation (M-015, M-035), judged on the device as resolved (the order is in
:mod:`harness.core.devices`: the spec, the start event, NVML attribution, else CPU after
the grace period):

- no verdict during ``util_grace_s``, with any non-train sample in the window, or before
  the window is covered by samples;
- a GPU job GPU by GPU: every GPU it holds must meet ``min_util`` on its own, on SM
  activity where the GPU gives it, else NVML util; the finding names the lowest GPU, its
  figure, which figure it is, and the mean of all (one idle GPU of eight is caught);
- a CPU job on the share of its CPUs the tree wanted (running plus waiting for a CPU);
- both halves of the window must be low: :func:`warn_utilisation` (the last half alone)
  fires half a window before :func:`check_utilisation` would abort, with the time left.

A GPU job whose utilisation cannot be read is refused (:func:`check_gpu_probe`) or
aborted (:func:`check_gpu_readable`) unless ``watch.gpu_probe = "optional"``; a GPU
above ``watch.gpu_mem_warn`` of its memory warns (:func:`check_gpu_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.devices import GpuReading, parse_device
from harness.core.spec import Gate, WatchConfig
from harness.core.values import as_float
from mistakes import RULE_LINKS

__all__ = [
    "SCHEDULER_ENDS",
    "Finding",
    "GateResult",
    "UtilSample",
    "check_gates",
    "check_gpu_memory",
    "check_gpu_probe",
    "check_gpu_readable",
    "check_metrics_file",
    "check_nonfinite",
    "check_ram",
    "check_scheduler_end",
    "check_stall",
    "check_utilisation",
    "warn_utilisation",
]

Level = Literal["ok", "warn", "abort"]
GIB = 1024**3
NONFINITE_KEYS = ("loss", "grad_norm")


@dataclass(frozen=True)
class Finding:
    rule: str
    level: Level
    summary: str  # one line with the numbers: "CPU 6 % over 30 s, threshold 80 %"
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def mistake_ids(self) -> tuple[str, ...]:
        return RULE_LINKS.get(self.rule, ())


@dataclass(frozen=True)
class UtilSample:
    t: float  # monotonic seconds
    util: float | None  # fraction of the device (mean GPU busy, or the CPU figure)
    phase: str  # the job's phase when the sample was taken
    gpus: tuple[GpuReading, ...] = ()  # the job's GPUs at this sample, when a GPU job
    source: str = ""  # which CPU figure ``util`` is: "running + waiting" or "running"


#: how the figure a finding names is described, by source
SOURCES = {
    "sm_activity": "SM activity",
    "util": "util",
    "running + waiting": "running incl. waiting for a CPU",
    "running": "running",
}


def check_ram(available_bytes: int, cfg: WatchConfig, *, before_launch: bool) -> Finding:
    """Free RAM against ``min_ram_free_gb`` (cgroup-aware figure from the probe)."""
    free_gb = available_bytes / GIB
    evidence = {"free_gb": round(free_gb, 2), "min_ram_free_gb": cfg.min_ram_free_gb}
    if free_gb >= cfg.min_ram_free_gb:
        return Finding("ram_headroom", "ok", f"{free_gb:.1f} GB free", evidence)
    when = "before launch" if before_launch else "while running"
    return Finding(
        "ram_headroom",
        "abort",
        f"RAM {free_gb:.1f} GB free {when}, minimum {cfg.min_ram_free_gb:g} GB",
        evidence,
    )


def _window(
    samples: Sequence[UtilSample], *, now: float, started_at: float, cfg: WatchConfig, span: float
) -> list[UtilSample] | None:
    """The samples of the last ``span`` seconds, when they decide anything (else None).

    Nothing during the grace period, when any sample of the window is outside the train
    phase (eval and checkpoints legitimately idle the device), or when the window is not
    yet covered by samples: the decision is never taken on one sample.
    """
    if now - started_at < cfg.util_grace_s + span:
        return None
    start = now - span
    window = [s for s in samples if start <= s.t <= now]
    if len(window) < 2 or any(s.phase != "train" for s in window):
        return None
    earlier = [s for s in samples if s.t < start]
    # Covered: the sample before the window was train phase too (so the window really was
    # all train) or the first in-window sample sits at its start (within one interval).
    spacing = (window[-1].t - window[0].t) / max(len(window) - 1, 1)
    if earlier:
        if earlier[-1].phase != "train":
            return None
    elif window[0].t - start > spacing * 1.5:
        return None
    return window


def check_utilisation(
    samples: Sequence[UtilSample],
    *,
    now: float,
    started_at: float,
    cfg: WatchConfig,
    device: str,
    how: str = "",
) -> Finding | None:
    """Abort when utilisation over the last ``util_window_s`` of train phase is below min_util.

    Each half of the window must be below ``min_util`` on its mean (and so is the mean of
    the whole, the figure the finding names): a job that drops mid-run is aborted a half
    window after its last half went low, which is when the early warning
    (:func:`warn_utilisation`: the last half alone) is sent, so there is half a window to
    recover; one idle sample in a busy window, or one busy sample in an idle one, decides
    nothing.

    A GPU job whose samples carry per-GPU readings is judged GPU by GPU: each GPU it holds
    must meet ``min_util`` on its own (SM activity where the GPU gives two readings of it
    in the window, else util), so one idle GPU of eight is caught; a GPU is judged once it
    is in the window's first sample (a rank that started late waits a window). The
    finding names the lowest GPU, its figure and which figure it is, and the mean of all.
    Without per-GPU readings, the mean figure in ``util`` is judged. A CPU job is judged
    by ``util``, the CPU figure named by ``source``. ``how`` (how the device was resolved)
    is shown in the summary. No verdict in the cases :func:`_window` lists.
    """
    return _assess(samples, now, started_at, cfg, device, how, cfg.util_window_s, split=True)


def _assess(
    samples: Sequence[UtilSample],
    now: float,
    started_at: float,
    cfg: WatchConfig,
    device: str,
    how: str,
    span: float,
    *,
    split: bool,
) -> Finding | None:
    """The last ``span`` seconds judged as a whole, or (``split``) each half on its own."""
    window = _window(samples, now=now, started_at=started_at, cfg=cfg, span=span)
    if window is None:
        return None
    gpu = device.startswith("cuda")
    where = f"device {device}, {how}" if how else ""
    if gpu and any(s.gpus for s in window):
        mid = now - span / 2 if split else None
        return _judge_gpus(window, cfg, span, device, how, where, mid=mid)
    timed = [(s.t, s.util) for s in window if s.util is not None]
    mid = now - span / 2 if split else None
    halves = _halves(timed, mid)
    if halves is None:
        return None
    values = [v for _, v in timed]
    mean = sum(values) / len(values)
    low = max(halves) < cfg.min_util
    sources = {s.source for s in window if s.util is not None}
    source = sources.pop() if len(sources) == 1 else ""
    kind = "GPU" if gpu else "CPU"
    evidence = {
        "device": device,
        "how": how,
        "label": kind,
        "figure": round(mean, 4),
        "source": source,
        "mean_util": round(mean, 4),
        "min_util": round(min(values), 4),
        "max_util": round(max(values), 4),
        "samples": len(values),
        "window_s": span,
        "threshold": cfg.min_util,
    }
    notes = "; ".join(n for n in (SOURCES.get(source, ""), where) if n)
    summary = f"{kind} {mean * 100:.0f} % over {span:g} s, threshold {cfg.min_util * 100:.0f} %" + (
        f" ({notes})" if notes else ""
    )
    return Finding("utilisation", "abort" if low else "ok", summary, evidence)


def _halves(timed: Sequence[tuple[float, float]], mid: float | None) -> tuple[float, float] | None:
    """The means of the values before ``mid`` and from it; None unless both have one.

    Without ``mid``, the mean of all of them twice (None for fewer than two values).
    """
    if mid is None:
        mean = sum(v for _, v in timed) / len(timed) if len(timed) >= 2 else None
        return None if mean is None else (mean, mean)
    first = [v for t, v in timed if t < mid]
    second = [v for t, v in timed if t >= mid]
    if not first or not second:
        return None
    return sum(first) / len(first), sum(second) / len(second)


def _judge_gpus(
    window: Sequence[UtilSample],
    cfg: WatchConfig,
    span: float,
    device: str,
    how: str,
    where: str,
    *,
    mid: float | None,
) -> Finding | None:
    per: dict[int, tuple[float, str, int]] = {}  # index -> (mean, source, samples)
    lows: set[int] = set()  # both halves below the threshold
    for index in sorted({g.index for g in window[0].gpus}):
        readings = [(s.t, g) for s in window for g in s.gpus if g.index == index]
        sm = [(t, g.sm_activity) for t, g in readings if g.sm_activity is not None]
        util = [(t, g.util) for t, g in readings if g.util is not None]
        timed, source = (sm, "sm_activity") if len(sm) >= 2 else (util, "util")
        halves = _halves(timed, mid)
        if halves is None:
            continue
        per[index] = (sum(v for _, v in timed) / len(timed), source, len(timed))
        if max(halves) < cfg.min_util:
            lows.add(index)
    if not per:
        return None
    overall = sum(m for m, _, _ in per.values()) / len(per)
    low = sorted(lows, key=lambda i: per[i][0])
    worst = low[0] if low else min(per, key=lambda i: per[i][0])
    figure, source, _ = per[worst]
    evidence = {
        "device": device,
        "how": how,
        "label": f"GPU {worst}",
        "gpu": worst,
        "figure": round(figure, 4),
        "source": source,
        "gpus": [
            {"index": i, "figure": round(m, 4), "source": src, "samples": n}
            for i, (m, src, n) in per.items()
        ],
        "low_gpus": low,
        "mean_util": round(overall, 4),
        "samples": len(window),
        "window_s": span,
        "threshold": cfg.min_util,
    }
    also = ", ".join(f"GPU {i} at {per[i][0] * 100:.0f} %" for i in low[1:])
    notes = "; ".join(
        n
        for n in (
            f"also {also}" if also else "",
            f"mean of {len(per)} GPUs {overall * 100:.0f} %" if len(per) > 1 else "",
            where,
        )
        if n
    )
    lowest = "" if low or len(per) == 1 else "lowest "
    summary = (
        f"{lowest}GPU {worst} at {figure * 100:.0f} % {SOURCES[source]} over {span:g} s, "
        f"threshold {cfg.min_util * 100:.0f} %" + (f" ({notes})" if notes else "")
    )
    return Finding("utilisation", "abort" if low else "ok", summary, evidence)


def warn_utilisation(
    samples: Sequence[UtilSample],
    *,
    now: float,
    started_at: float,
    cfg: WatchConfig,
    device: str,
    how: str = "",
) -> Finding | None:
    """Half the window is over and the rule would fire: a ``warn`` with the time left.

    ``ok`` when the last half window meets the threshold (the episode is over), None when
    nothing can be said yet. "GPU 1 at 4 % SM activity for 15 s (threshold 80 %);
    aborting in 15 s unless it recovers".
    """
    half = cfg.util_window_s / 2
    found = _assess(samples, now, started_at, cfg, device, how, half, split=False)
    if found is None or found.level == "ok":
        return found
    ev = found.evidence
    left = max(cfg.util_window_s - half, started_at + cfg.util_grace_s + cfg.util_window_s - now)
    source = SOURCES.get(str(ev["source"]), "")
    what = f"{ev['label']} at {float(ev['figure']) * 100:.0f} %"
    notes = [f"threshold {cfg.min_util * 100:.0f} %"]
    if device.startswith("cuda"):
        what += f" {source}"
    elif source:
        notes.insert(0, source)
    summary = (
        f"{what} for {half:g} s ({'; '.join(notes)}); "
        f"aborting in {round(left, 1):g} s unless it recovers"
    )
    return Finding("utilisation", "warn", summary, {**ev, "abort_in_s": round(left, 1)})


def check_gpu_probe(
    device: str, cfg: WatchConfig, *, available: bool, reason: str | None, count: int
) -> Finding | None:
    """Before launch: can a job declared ``cuda`` have its utilisation read? None otherwise.

    Refused (``abort``) when NVML cannot read the GPUs, or has no GPU the spec names,
    unless ``watch.gpu_probe = "optional"`` (``warn``): the rule never fails open silently.
    An ``auto`` job is not checked here: it is resolved while it runs (see
    :mod:`harness.core.devices`), and a GPU job found unreadable then is aborted.
    """
    parsed = parse_device(device)
    if parsed is None or parsed[0] != "cuda":
        return None
    evidence: dict[str, Any] = {"device": device, "gpu_probe": cfg.gpu_probe, "gpus": count}
    if not available:
        why = reason or "NVML is unavailable"
        evidence["reason"] = why
        if cfg.gpu_probe == "optional":
            summary = f'{why}: {device} runs unjudged (watch.gpu_probe = "optional")'
            return Finding("gpu_probe", "warn", summary, evidence)
        summary = (
            f"{device} needs readable GPU utilisation and {why} "
            '(watch.gpu_probe = "optional" runs it unjudged)'
        )
        return Finding("gpu_probe", "abort", summary, evidence)
    missing = [i for i in parsed[1] if i >= count]
    if missing:
        summary = f"{device} names GPU {missing[0]} and NVML reads {count} GPU(s)"
        return Finding("gpu_probe", "abort", summary, {**evidence, "missing": missing})
    return Finding("gpu_probe", "ok", f"NVML reads {count} GPU(s)", evidence)


def check_gpu_readable(
    blind_since: float | None, *, now: float, cfg: WatchConfig, device: str, reason: str
) -> Finding | None:
    """A GPU job whose utilisation has been unreadable for a whole window.

    ``abort`` (``warn`` with ``watch.gpu_probe = "optional"``): a GPU job nobody can judge
    is never quietly let run. None while readable or not yet unreadable for a window.
    """
    if blind_since is None or now - blind_since < cfg.util_window_s:
        return None
    blind = now - blind_since
    evidence = {"device": device, "reason": reason, "unreadable_s": round(blind, 1)}
    summary = f"no readable GPU utilisation for {blind:.0f} s on {device}: {reason}"
    if cfg.gpu_probe == "optional":
        return Finding(
            "gpu_probe", "warn", summary + ' (watch.gpu_probe = "optional": unjudged)', evidence
        )
    return Finding("gpu_probe", "abort", summary, evidence)


def check_gpu_memory(gpus: Sequence[GpuReading], cfg: WatchConfig) -> Finding | None:
    """A GPU of the job above ``watch.gpu_mem_warn`` of its memory: a ``warn``, never more."""
    if cfg.gpu_mem_warn <= 0:
        return None
    full = [
        (g, g.mem_used / g.mem_total)
        for g in gpus
        if g.mem_used is not None and g.mem_total and g.mem_used / g.mem_total >= cfg.gpu_mem_warn
    ]
    if not full:
        return None
    g, share = max(full, key=lambda f: f[1])
    assert g.mem_used is not None and g.mem_total is not None
    summary = (
        f"GPU {g.index} memory {g.mem_used / GIB:.1f}/{g.mem_total / GIB:.1f} GB "
        f"({share * 100:.0f} %), warning at {cfg.gpu_mem_warn * 100:.0f} %"
    )
    evidence = {
        "gpu": g.index,
        "mem_used": g.mem_used,
        "mem_total": g.mem_total,
        "share": round(share, 4),
        "threshold": cfg.gpu_mem_warn,
        "gpus": [f[0].index for f in full],
    }
    return Finding("gpu_memory", "warn", summary, evidence)


def check_nonfinite(record: Mapping[str, Any], cfg: WatchConfig) -> Finding | None:
    """NaN or Inf in ``loss`` or ``grad_norm`` of one metrics line."""
    for key in NONFINITE_KEYS:
        value = as_float(record.get(key))
        if value is not None and not math.isfinite(value):
            step = record.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or abs(step) >= 2**63:
                step = None  # only a step count is shown and kept, not whatever the line held
            at = f" at step {step}" if step is not None else ""
            return Finding(
                "nonfinite",
                "abort" if cfg.nonfinite == "abort" else "warn",
                f"{key} is {value}{at}",
                {"metric": key, "value": str(value), "step": step},
            )
    return None


def check_metrics_file(found: str, *, name: str = "metrics.jsonl") -> Finding:
    """Something other than a regular file in the run dir stands where the metrics go.

    ``found`` is the tailer's description ("a FIFO", "a symlink to /etc/passwd"). Nothing
    can be read from it, so this warns and the run goes on: if the job really reports
    nothing, the stall rule ends it as it would any silent job.
    """
    return Finding(
        "metrics_file",
        "warn",
        f"{name} is {found}; no metrics are read from it (the stall rule still applies)",
        {"file": name, "found": found},
    )


def check_stall(last_line_at: float, *, now: float, cfg: WatchConfig) -> Finding | None:
    """No metrics line for longer than ``stall_s`` (counted from launch before the first)."""
    silent = now - last_line_at
    if silent <= cfg.stall_s:
        return None
    return Finding(
        "stall",
        "abort",
        f"no metrics for {silent:.0f} s, limit {cfg.stall_s:g} s",
        {"silent_s": round(silent, 1), "stall_s": cfg.stall_s},
    )


#: how a scheduler's end states read, and the rule each becomes (COMPLETED and FAILED are
#: the job's own exit status, judged as for a local job). NOT_VISIBLE is the harness's:
#: the job ended without ever reaching its run directory.
SCHEDULER_ENDS: dict[str, tuple[str, str]] = {
    "TIMEOUT": ("scheduler_timeout", "Slurm ended the job at its time limit (TIMEOUT)"),
    "OUT_OF_MEMORY": (
        "scheduler_oom",
        "Slurm killed the job for exceeding its memory request (OUT_OF_MEMORY)",
    ),
    "NODE_FAIL": ("scheduler_node", "a node of the job failed (NODE_FAIL)"),
    "BOOT_FAIL": ("scheduler_node", "a node of the job failed to boot (BOOT_FAIL)"),
    "PREEMPTED": ("scheduler_preempted", "Slurm preempted the job (PREEMPTED)"),
    "DEADLINE": ("scheduler_preempted", "the job missed its deadline (DEADLINE)"),
    "CANCELLED": ("scheduler_cancelled", "the job was cancelled outside the harness (CANCELLED)"),
    "REVOKED": ("scheduler_cancelled", "the job was revoked (REVOKED)"),
    "NOT_VISIBLE": (
        "shared_fs",
        "the job never reached its run directory: it must be on a filesystem the nodes share",
    ),
}


def check_scheduler_end(state: str | None, detail: str, code: int | None) -> Finding | None:
    """A job a scheduler ended itself (TIMEOUT, OUT_OF_MEMORY, ...); None for its own end.

    ``detail`` is what decided it, in the scheduler's terms ("time limit 00:01:00").
    """
    if state is None or state not in SCHEDULER_ENDS:
        return None
    rule, what = SCHEDULER_ENDS[state]
    said = f" ({detail})" if detail else ""
    return Finding(
        rule, "abort", f"{what}{said}", {"state": state, "detail": detail, "exit_code": code}
    )


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float | None
    passed: bool

    def describe(self) -> str:
        if self.value is None:
            return f"{self.gate.metric}: never reported (gate {self.gate})"
        mark = "pass" if self.passed else "FAIL"
        return f"{self.gate.metric} = {self.value:.4g} ({mark}, gate {self.gate})"


def check_gates(gates: Sequence[Gate], final: Mapping[str, Any]) -> list[GateResult]:
    """Every declared gate against the final metrics; a missing metric fails its gate."""
    out = []
    for gate in gates:
        value = as_float(final.get(gate.metric))
        ok = value is not None and math.isfinite(value) and gate.passes(value)
        out.append(GateResult(gate, value, ok))
    return out
