"""Which device a run is judged on, and how that was decided (pure; no NVML here).

The utilisation rule judges a GPU job by its GPUs and a CPU job by its CPUs, so the
first question about a run is which it is. The spec's ``device`` answers it when it is
not ``auto``. For ``auto`` the answer is, in order:

1. the job's ``start`` event, when it names a device (``cpu``, ``cuda``, ``cuda:1``);
2. NVML process attribution: a process of the job's tree holding a context on a GPU makes
   it a GPU job on those GPUs. This is re-checked at every probe sample, so the set grows
   as ranks start (``cuda:0`` then ``cuda:0,1``), and it overrides the fallback below when
   a context appears late;
3. else CPU, once the grace period (``watch.util_grace_s``) is over.

A GPU job is judged on the GPUs it holds (attributed by NVML), plus the index the spec or
the start event names (``cuda:1``). A bare ``cuda`` with no attribution (NVML inside a
container sees host pids) is judged on every GPU NVML reads. A GPU joins the judgement
when it is first seen held, so a rank that starts late is only judged once it has been
watched for a whole window.

:attr:`Resolver.label` and :attr:`Resolver.how` are what the status line, the heartbeat
and incidents show: ``cuda:0,1 (attributed by NVML)``, ``cpu (no GPU context after the
grace period)``, ``cuda (from the start event)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["GpuReading", "Resolver", "parse_device"]

BY_SPEC = "from the spec"
BY_START = "from the start event"
BY_NVML = "attributed by NVML"
BY_GRACE = "no GPU context after the grace period"
UNRESOLVED = "not resolved yet"

_CUDA = re.compile(r"^cuda(?::(\d{1,4}(?:,\d{1,4})*))?$")


@dataclass(frozen=True)
class GpuReading:
    """One GPU as the probe read it. Fractions are 0..1; None where NVML could not tell."""

    index: int
    util: float | None = None  # share of time a kernel ran (NVML utilisation)
    sm_activity: float | None = None  # share of SMs busy (GPM, Hopper and later)
    mem_used: int | None = None  # bytes in use on the whole device
    mem_total: int | None = None
    held: bool = False  # a process of the job holds a context on it

    @property
    def busy(self) -> float | None:
        """The figure the rule prefers: SM activity where the GPU offers it, else util."""
        return self.sm_activity if self.sm_activity is not None else self.util

    @property
    def source(self) -> str:
        """Which figure :attr:`busy` is: ``sm_activity`` or ``util`` ("" when neither)."""
        if self.sm_activity is not None:
            return "sm_activity"
        return "util" if self.util is not None else ""


def parse_device(name: str) -> tuple[str, tuple[int, ...]] | None:
    """``("cuda", (0, 1))`` for ``cuda:0,1``, ``("cpu", ())`` for anything else named.

    None for ``auto`` or an empty name: the name does not decide the device.
    """
    name = name.strip()
    if name in ("", "auto"):
        return None
    m = _CUDA.match(name)
    if m is None:
        return ("cuda", ()) if name.startswith("cuda") else ("cpu", ())
    return "cuda", tuple(sorted({int(i) for i in (m.group(1) or "").split(",") if i}))


class Resolver:
    """The resolution order above, fed with what the machine observes (see module doc)."""

    def __init__(self, declared: str, *, started_at: float, grace_s: float) -> None:
        self._started_at = started_at
        self._grace_s = grace_s
        self._named: str | None = None  # the name that decided, as the spec or job wrote it
        self._pinned: tuple[int, ...] = ()  # indices that name gave (cuda:1)
        self._held: dict[int, float] = {}  # GPU index -> first time a job process held it
        self.kind: str | None = None  # "cpu" | "cuda" | None while unresolved
        self.how = UNRESOLVED
        parsed = parse_device(declared)
        if parsed is not None:
            self._decide(declared, parsed, BY_SPEC)

    @property
    def label(self) -> str:
        """``cuda:0,1``, ``cuda``, ``cpu``, or ``auto`` while unresolved."""
        if self.kind is None:
            return "auto"
        if self.kind != "cuda":
            return self._named or "cpu"
        indices = self.indices
        return f"cuda:{','.join(map(str, indices))}" if indices else "cuda"

    @property
    def shown(self) -> str:
        """``cuda:0,1 (attributed by NVML)``."""
        return f"{self.label} ({self.how})"

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def indices(self) -> tuple[int, ...]:
        """The GPUs the job is judged on, when known (else: every GPU read)."""
        return tuple(sorted({*self._pinned, *self._held}))

    def _decide(self, name: str, parsed: tuple[str, tuple[int, ...]], how: str) -> None:
        self.kind, self._pinned = parsed
        self._named = name
        self.how = how

    def on_start_event(self, name: str) -> bool:
        """The job's ``start`` event named ``name``; True when that changed the device."""
        parsed = parse_device(name)
        if parsed is None or self.how in (BY_SPEC, BY_START):
            return False
        before = (self.kind, self.label)
        self._decide(name, parsed, BY_START)
        return (self.kind, self.label) != before

    def on_readings(self, t: float, readings: Iterable[GpuReading]) -> bool:
        """NVML attribution at time ``t``; True when the device (or its GPU set) changed."""
        new = [r.index for r in readings if r.held and r.index not in self._held]
        for index in new:
            self._held[index] = t
        if self.how in (BY_SPEC, BY_START):
            return bool(new) and self.gpu
        if self._held and self.how != BY_NVML:
            self.kind, self._pinned, self._named, self.how = "cuda", (), None, BY_NVML
            return True
        return bool(new)

    def on_time(self, now: float) -> bool:
        """The grace period ended with nothing decided: CPU. True when that decided it."""
        if self.kind is not None or now - self._started_at < self._grace_s:
            return False
        self.kind, self.how = "cpu", BY_GRACE
        return True

    def judged(self, t: float, readings: Sequence[GpuReading]) -> tuple[GpuReading, ...]:
        """Of the GPUs read at time ``t``, those the job is judged on at that time."""
        indices = self.indices
        if not indices:
            return tuple(readings)  # a bare "cuda" nothing was attributed to: every GPU
        return tuple(r for r in readings if r.index in indices and t >= self._since(r.index))

    def _since(self, index: int) -> float:
        """From when a GPU counts: always when named, else from when it was first held."""
        return -math.inf if index in self._pinned else self._held.get(index, math.inf)
