"""The checklist as pure functions (DESIGN section 5).

Each rule takes what the supervisor has observed and a clock value and returns a
:class:`Finding` (or None when it has nothing to say yet). No I/O, no clock reads: the
state machine and the tests call them with plain values. Every finding carries the
numbers that decided it and the mistake ids it guards against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.spec import Gate, WatchConfig
from harness.core.values import as_float
from mistakes import RULE_LINKS

__all__ = [
    "Finding",
    "GateResult",
    "UtilSample",
    "check_gates",
    "check_metrics_file",
    "check_nonfinite",
    "check_ram",
    "check_stall",
    "check_utilisation",
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
    util: float | None  # fraction of the device (GPU busy, or the job's share of all CPUs)
    phase: str  # the job's phase when the sample was taken


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


def check_utilisation(
    samples: Sequence[UtilSample],
    *,
    now: float,
    started_at: float,
    cfg: WatchConfig,
    device: str,
) -> Finding | None:
    """Abort when the mean over the last ``util_window_s`` of train phase stays below min_util.

    No verdict during the grace period, when any sample of the window is outside the
    train phase (eval and checkpoints legitimately idle the device), or when the window
    is not yet covered by samples: the decision is never taken on one sample.
    """
    if now - started_at < cfg.util_grace_s + cfg.util_window_s:
        return None
    start = now - cfg.util_window_s
    window = [s for s in samples if s.t >= start]
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
    values = [s.util for s in window if s.util is not None]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    kind = "GPU" if device.startswith("cuda") else "CPU"
    evidence = {
        "device": device,
        "mean_util": round(mean, 4),
        "min_util": round(min(values), 4),
        "max_util": round(max(values), 4),
        "samples": len(values),
        "window_s": cfg.util_window_s,
        "threshold": cfg.min_util,
    }
    summary = (
        f"{kind} {mean * 100:.0f} % over {cfg.util_window_s:g} s, "
        f"threshold {cfg.min_util * 100:.0f} %"
    )
    if mean < cfg.min_util:
        return Finding("utilisation", "abort", summary, evidence)
    return Finding("utilisation", "ok", summary, evidence)


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
