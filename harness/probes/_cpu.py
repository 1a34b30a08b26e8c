"""CPU use of a job's whole process tree, as a fraction of the machine.

``util`` is CPU-seconds consumed by the tree between two samples divided by wall seconds
times the number of cores, so 1.0 means every core busy and one busy single-threaded
process on a 2-core machine reads 0.5. It is measured from ``cpu_times()`` deltas over
the probe's monotonic clock rather than ``cpu_percent()``, so a process first seen in a
sample is not counted as 0 by mistake:

- a process born after the previous sample contributes all of its CPU time (all of it
  falls inside the interval);
- a process that existed before the previous sample but was not in the tree then (it
  joined the tree late) is primed: counted from the next sample on;
- a process that vanished, turned into an unreadable zombie or is not ours to read is
  dropped silently; the CPU time it used since the previous sample is lost.

``rss_bytes`` adds up resident memory over the tree, so pages shared between processes
(fork-inherited, shared memory) are counted once per process: an upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

# A process is identified by pid and create time, so a reused pid is a new process.
_Key = tuple[int, float]

# Start times are whole clock ticks (10 ms), truncated: a process born just after the
# previous sample can read as born slightly before it.
_BIRTH_SLACK_S = 0.05


@dataclass(frozen=True)
class CpuSample:
    """One reading of a process tree. ``util`` is None on the first call (no interval)."""

    t: float
    util: float | None
    nprocs: int
    rss_bytes: int


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants; [] when ``pid`` no longer exists."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root] if _alive(root) else []


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running())
    except psutil.Error:
        return False


def _since_boot() -> float:
    """Seconds since boot now, on the same scale as a process's start ticks.

    psutil's ``create_time`` is boot time (a whole second in /proc/stat) plus start ticks,
    so births are compared with "now" on the since-boot scale, not on the epoch.
    """
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time() - psutil.boot_time()


class CpuProbe:
    """Stateful CPU probe over a caller-supplied set of processes (sync; call it off-loop)."""

    def __init__(
        self,
        tree: Callable[[], Iterable[psutil.Process]],
        *,
        ncores: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ncores is not None and ncores < 1:
            raise ValueError(f"ncores must be >= 1, got {ncores}")
        self._tree = tree
        self._ncores = ncores or psutil.cpu_count() or 1
        self._clock = clock
        self._last_t: float | None = None
        self._last_boot_s = 0.0
        self._cpu: dict[_Key, float] = {}

    @property
    def ncores(self) -> int:
        return self._ncores

    def sample(self) -> CpuSample:
        t = self._clock()
        now_boot_s = _since_boot()
        boot = psutil.boot_time()
        try:
            procs = list(self._tree())
        except psutil.Error:
            procs = []
        first = self._last_t is None
        cpu: dict[_Key, float] = {}
        busy_s = 0.0
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    created = p.create_time()
                    times = p.cpu_times()
                    mem = p.memory_info().rss
            except psutil.Error:
                continue
            key = (p.pid, created)
            if key in cpu:  # the caller listed the same process twice
                continue
            total = float(times.user + times.system)
            cpu[key] = total
            rss += int(mem)
            before = self._cpu.get(key)
            if before is not None:
                busy_s += max(0.0, total - before)
            elif not first and created - boot >= self._last_boot_s - _BIRTH_SLACK_S:
                busy_s += total
        util: float | None = None
        if self._last_t is not None and t > self._last_t:
            util = busy_s / ((t - self._last_t) * self._ncores)
        self._cpu = cpu
        self._last_t = t
        self._last_boot_s = now_boot_s
        return CpuSample(t=t, util=util, nprocs=len(cpu), rss_bytes=rss)
