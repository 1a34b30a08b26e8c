"""Plain text views of a run: the live status line, durations, trends, sparklines.

Pure functions over a progress snapshot (``Progress.snapshot()``), shared by the
foreground status line, ``harness status`` and the heartbeat. The device is shown as
resolved and how (``cuda:0,1 (attributed by NVML)``); the utilisation shown is the
figure the rule judges (SM activity per GPU where there is one, a CPU job's running +
waiting share), with the other figure beside it, labelled: ``GPU1 97% SM (util 100%)
3.0/80.0 GB``, ``CPU 98% incl. waiting (running 45%)``.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.values import as_float
from memory import clip

__all__ = [
    "duration",
    "exit_status",
    "gb",
    "key_metric_of",
    "percent",
    "progress_line",
    "progress_parts",
    "sparkline",
    "trend",
]

_BARS = "▁▂▃▄▅▆▇█"
GIB = 1024**3


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def gb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / GIB:.1f} GB"


def trend(values: Sequence[float]) -> str:
    """↓ ↑ or → comparing the last third of the points with the first third."""
    if len(values) < 6:
        return ""
    k = len(values) // 3
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    scale = max(abs(first), abs(last), 1e-12)
    if (last - first) / scale < -0.02:
        return "↓"
    if (last - first) / scale > 0.02:
        return "↑"
    return "→"


def sparkline(values: Sequence[float], width: int = 12) -> str:
    points = [v for v in values if math.isfinite(v)][-width:]
    if not points:
        return ""
    lo, hi = min(points), max(points)
    if hi - lo < 1e-12:
        return _BARS[3] * len(points)
    # halved so that hi - lo cannot overflow to inf (inf / inf is nan, and int(nan) raises)
    span = hi / 2 - lo / 2
    return "".join(_BARS[round((v / 2 - lo / 2) / span * (len(_BARS) - 1))] for v in points)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def key_metric_of(spec: Mapping[str, Any]) -> str | None:
    """:attr:`RunSpec.shown_metric` for a spec stored as a dict (a run row)."""
    gates = spec.get("gates") or {}
    key = spec.get("key_metric") or (next(iter(gates)) if gates else None)
    return str(key) if key else None


def progress_parts(p: Mapping[str, Any], key_metric: str | None) -> list[str]:
    """Step/total, rate and ETA, loss with trend, key metric with sparkline, device, RAM."""
    parts = []
    queued = p.get("queued")
    if isinstance(queued, Mapping):  # a scheduler holds the job: nothing else to show yet
        reason = clip(str(queued.get("reason") or "none given"), 64)
        return [f"queued {duration(as_float(queued.get('queued_s')))}, reason {reason}"]
    step, total = p.get("step"), p.get("total_steps")
    if step is not None and total:
        parts.append(f"step {step}/{total} ({step / total * 100:.0f}%)")
    elif step is not None:
        parts.append(f"step {step}")
    rate = p.get("rate")
    if rate:
        parts.append(f"{rate:.2f} it/s" if rate < 10 else f"{rate:.0f} it/s")
        parts.append(f"ETA {duration(p.get('eta_s'))}")
    metrics = p.get("metrics") or {}
    if "loss" in metrics:
        parts.append(f"loss {_fmt(metrics['loss'])}{trend(p.get('loss_history') or [])}")
    if key_metric and key_metric in metrics:
        spark = sparkline(p.get("key_history") or [])
        parts.append(f"{key_metric} {_fmt(metrics[key_metric])} {spark}".rstrip())
    device = str(p.get("device") or "cpu")
    if p.get("device_by"):
        parts.append(f"{device} ({p['device_by']})")
    gpus = p.get("gpus") or []
    if device.startswith("cuda") and gpus:
        parts += [_gpu_part(g) for g in gpus if isinstance(g, Mapping)]
    elif device.startswith("cuda"):
        parts.append(f"GPU {percent(p.get('gpu_busy'))}")
        if p.get("vram_used") is not None:
            parts.append(f"VRAM {gb(p.get('vram_used'))}/{gb(p.get('vram_total'))}")
    else:
        parts.append(_cpu_part(p))
    parts.append(f"RAM free {gb(p.get('ram_available'))}")
    ranks = _ranks_part(p.get("ranks"))
    if ranks:
        parts.append(ranks)
    if p.get("where"):
        parts.append(f"on {clip(str(p['where']), 64)}")
    return parts


#: a rank below this share of the fastest rank's step rate is named a straggler
STRAGGLER_SHARE = 0.8


def _ranks_part(ranks: Any) -> str:
    """``ranks 4: 2.10-2.30 it/s`` or, with a straggler, ``ranks 4: 0.90-2.30 it/s, ⚠ rank
    3 at 0.90 it/s (39% of the fastest)``; "" for a job of one rank."""
    if not isinstance(ranks, list) or len(ranks) < 2:
        return ""
    rates = {}
    for r in ranks:
        if isinstance(r, Mapping) and isinstance(r.get("rank"), int):
            rate = as_float(r.get("rate"))
            if rate is not None and math.isfinite(rate) and rate > 0:
                rates[r["rank"]] = rate
    if not rates:
        return f"ranks {len(ranks)}"
    fast, slow = max(rates.values()), min(rates.values())
    head = f"ranks {len(ranks)}: " + (
        f"{_rate(slow)}-{_rate(fast)} it/s" if slow != fast else f"{_rate(fast)} it/s"
    )
    laggard = min(rates, key=lambda r: rates[r])
    if slow < STRAGGLER_SHARE * fast:
        return (
            f"{head}, ⚠ rank {laggard} at {_rate(slow)} it/s "
            f"({slow / fast * 100:.0f}% of the fastest)"
        )
    return head


def _rate(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _cpu_part(p: Mapping[str, Any]) -> str:
    """The CPU figure the rule judges, and the plain running share beside it, labelled."""
    if "util" not in p:  # a snapshot from before the judged figure was kept
        return f"CPU {percent(p.get('cpu_util'))}"
    if p.get("util_source") == "running + waiting":
        return f"CPU {percent(p.get('util'))} incl. waiting (running {percent(p.get('cpu_util'))})"
    return f"CPU {percent(p.get('util'))}"


def _gpu_part(g: Mapping[str, Any]) -> str:
    """``GPU1 97% SM (util 100%) 3.0/80.0 GB``: the judged figure first, then the other."""
    text = f"GPU{g.get('index')} {percent(g.get('busy'))}"
    if g.get("source") == "sm_activity":
        text += " SM"
        if g.get("util") is not None:
            text += f" (util {percent(g.get('util'))})"
    elif g.get("source") == "util":
        text += " util"
    used, total = g.get("mem_used"), g.get("mem_total")
    if isinstance(used, int | float) and isinstance(total, int | float) and total:
        text += f" {used / GIB:.1f}/{total / GIB:.1f} GB"
    return text


def progress_line(name: str, status: str, p: Mapping[str, Any], key_metric: str | None) -> str:
    """``echo  running  step 120/600 (20%)  3.2 it/s  ETA 2m30s  loss 0.213↓ …``"""
    parts = [name, status, *progress_parts(p, key_metric)]
    if p.get("phase") and p.get("phase") != "train":
        parts.append(f"[{p['phase']}]")
    return "  ".join(parts)


def exit_status(code: int) -> str:
    """A process's exit status as a person reads it: ``exit code 1``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
