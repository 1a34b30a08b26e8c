"""One run's utilisation judgement as time goes on (pure: the run machine feeds it).

:class:`UtilWatch` holds what the utilisation rules of :mod:`harness.core.rules` need
between events: the device as resolved (:class:`~harness.core.devices.Resolver`), the
samples of the last window with both the CPU and the per-GPU figures (so a job resolved
late, or a GPU that joins, is judged from what was observed), whether this low episode was
already warned of, and since when a GPU job's utilisation has been unreadable.

:meth:`UtilWatch.observe` takes a probe sample and returns what the status line shows:
the figure the rule judges (per GPU for a GPU job), so what a person reads is what
decides. :meth:`UtilWatch.decide` returns the verdicts at a time: an abort, a warning
(recorded once) or the early alert.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.core.devices import GpuReading, Resolver
from harness.core.rules import (
    Finding,
    UtilSample,
    check_gpu_readable,
    check_utilisation,
    warn_utilisation,
)
from harness.core.spec import WatchConfig

__all__ = ["Shown", "UtilWatch", "Verdict"]

RUNNING_AND_WAITING = "running + waiting"


@dataclass(frozen=True)
class _Observed:
    t: float
    phase: str
    cpu: float | None  # the CPU figure the rule judges (running + waiting, else running)
    cpu_source: str
    gpus: tuple[GpuReading, ...]
    gpu_busy: float | None  # the probe's mean, for samples without per-GPU readings


@dataclass(frozen=True)
class Shown:
    """What the status line shows of one sample: the judged figure first."""

    util: float | None
    source: str  # "running + waiting", "running", "sm_activity", "util", "mixed" or ""
    gpu_busy: float | None = None
    vram_used: int | None = None
    vram_total: int | None = None
    judged: tuple[GpuReading, ...] = ()  # the GPUs the job is judged on, as read
    gpus: list[dict[str, Any]] = field(default_factory=list)  # the same, for a snapshot


@dataclass(frozen=True)
class Verdict:
    abort: Finding | None = None
    warn: Finding | None = None  # to record once per rule, the run going on
    alert: Finding | None = None  # the early warning: an alert, nothing recorded


class UtilWatch:
    """The utilisation rules of one run, with the state they need between events."""

    def __init__(self, device: str, cfg: WatchConfig, *, started_at: float) -> None:
        self.cfg = cfg
        self.started_at = started_at
        self.resolver = Resolver(device, started_at=started_at, grace_s=cfg.util_grace_s)
        self._observed: deque[_Observed] = deque()
        self._alerted = False  # the early warning of this low episode was sent
        self._blind_since: float | None = None  # a GPU job's utilisation unreadable since
        self._blind_reason = ""
        self._shown = (self.resolver.kind, self.resolver.label)

    @property
    def device(self) -> str:
        return self.resolver.label

    @property
    def device_by(self) -> str:
        return self.resolver.how

    def start_event(self, name: str) -> None:
        self.resolver.on_start_event(name)
        self._changed()

    def _changed(self) -> None:
        """A new device (or GPU set) starts a new episode."""
        now = (self.resolver.kind, self.resolver.label)
        if now != self._shown:
            self._shown = now
            self._alerted = False
            self._blind_since = None

    def observe(
        self,
        t: float,
        phase: str,
        *,
        cpu_util: float | None,
        cpu_available: float | None,
        gpus: tuple[GpuReading, ...] = (),
        gpu_busy: float | None = None,
        vram_used: int | None = None,
        vram_total: int | None = None,
        gpu_error: str | None = None,
    ) -> Shown:
        """Keep one probe sample; what the status line shows of it."""
        self.resolver.on_readings(t, gpus)
        self._changed()
        cpu, source = cpu_available, RUNNING_AND_WAITING
        if cpu is None:
            cpu, source = cpu_util, "running" if cpu_util is not None else ""
        self._observed.append(_Observed(t, phase, cpu, source, gpus, gpu_busy))
        horizon = t - self.cfg.util_window_s - 2 * self.cfg.sample_every_s
        while self._observed and self._observed[0].t < horizon:
            self._observed.popleft()
        if not self.resolver.gpu:
            return Shown(cpu, source, gpu_busy, vram_used, vram_total)
        judged = self.resolver.judged(t, gpus)
        if gpus:
            gpu_busy = _mean([g.busy for g in judged])
            vram_used = _total([g.mem_used for g in judged])
            vram_total = _total([g.mem_total for g in judged])
        if gpu_busy is not None:
            self._blind_since = None
        elif self._blind_since is None:
            self._blind_since = t
            self._blind_reason = gpu_error or f"NVML gave no utilisation for {self.device}"
        sources = {g.source for g in judged if g.source}
        shown_source = sources.pop() if len(sources) == 1 else ("mixed" if sources else "")
        rows = [
            {
                "index": g.index,
                "busy": g.busy,
                "source": g.source,
                "util": g.util,
                "sm_activity": g.sm_activity,
                "mem_used": g.mem_used,
                "mem_total": g.mem_total,
            }
            for g in judged
        ]
        return Shown(gpu_busy, shown_source, gpu_busy, vram_used, vram_total, judged, rows)

    def samples(self) -> list[UtilSample]:
        """The kept samples as the utilisation rule sees them for the device as resolved."""
        if not self.resolver.gpu:
            return [UtilSample(o.t, o.cpu, o.phase, (), o.cpu_source) for o in self._observed]
        out = []
        for o in self._observed:
            gpus = self.resolver.judged(o.t, o.gpus) if o.gpus else ()
            util = _mean([g.busy for g in gpus]) if o.gpus else o.gpu_busy
            out.append(UtilSample(o.t, util, o.phase, gpus))
        return out

    def decide(self, now: float) -> Verdict:
        """The verdicts at ``now``: unreadable GPU, the rule itself, the early alert."""
        self.resolver.on_time(now)
        self._changed()
        cfg, device, how = self.cfg, self.device, self.device_by
        if self.resolver.gpu:
            blind = check_gpu_readable(
                self._blind_since, now=now, cfg=cfg, device=device, reason=self._blind_reason
            )
            if blind is not None:
                return Verdict(abort=blind) if blind.level == "abort" else Verdict(warn=blind)
        samples = self.samples()
        args: dict[str, Any] = {"device": device, "how": how}
        found = check_utilisation(samples, now=now, started_at=self.started_at, cfg=cfg, **args)
        if found is not None and found.level == "abort":
            return Verdict(abort=found)
        early = warn_utilisation(samples, now=now, started_at=self.started_at, cfg=cfg, **args)
        if early is None:
            return Verdict()
        if early.level == "ok":
            self._alerted = False  # recovered: the next low episode is warned again
            return Verdict()
        if self._alerted:
            return Verdict()
        self._alerted = True
        return Verdict(alert=early)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _total(values: Sequence[int | None]) -> int | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)
