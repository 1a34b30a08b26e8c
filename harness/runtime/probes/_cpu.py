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

"The machine" is the CPUs the job may run on: the process's CPU affinity, capped by a
cgroup CPU quota (``cpu.max``) where one is set, so a container limited to 2 CPUs on a
64-core host is judged against 2. ``wait`` is the time the tree's threads spent runnable
but waiting for a CPU (``run_delay`` from ``/proc/PID/task/TID/schedstat``), as the same
fraction of the machine, and ``available_util`` = min(1, util + wait) is how much of the
machine the job *wanted*: a busy job starved by other load on a shared machine reads as
busy (it is not wasting anything), while a job that sleeps, waits on I/O or runs one
thread on a 2-core machine reads low whatever else runs. Without schedstat (a kernel
without it) ``wait`` is None and the rule falls back to ``util``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

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
    wait: float | None = None  # runnable-but-waiting share of the machine (see module doc)

    @property
    def available_util(self) -> float | None:
        """How much of the machine the job wanted: running plus waiting for a CPU."""
        if self.util is None:
            return None
        if self.wait is None:
            return self.util
        return min(1.0, self.util + self.wait)


def usable_cpus(root: Path = Path("/")) -> tuple[list[int] | None, float]:
    """(CPU ids the process may run on or None when unknown, how many cores it may use)."""
    try:
        ids: list[int] | None = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ids = None
    cores = float(len(ids)) if ids else float(psutil.cpu_count() or 1)
    try:
        rel = ""
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                rel = line[3:].strip().lstrip("/")
        d = root / "sys/fs/cgroup" / rel
        while True:
            quota, _, period = (d / "cpu.max").read_text().partition(" ")
            if quota != "max" and float(period) > 0:
                cores = min(cores, float(quota) / float(period))
            if d == root / "sys/fs/cgroup" or d.parent == d:
                break
            d = d.parent
    except (OSError, ValueError):
        pass
    return ids, max(cores, 0.01)


def _run_delay_s(pid: int) -> float | None:
    """Seconds all threads of ``pid`` spent waiting on a run queue (None: not readable)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


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
        ncores: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ncores is not None and ncores < 1:
            raise ValueError(f"ncores must be >= 1, got {ncores}")
        self._tree = tree
        _, usable = usable_cpus()
        self._ncores = ncores or usable
        self._clock = clock
        self._wait: dict[_Key, float] = {}
        self._schedstat = os.path.exists("/proc/self/schedstat")
        self._last_t: float | None = None
        self._last_boot_s = 0.0
        self._cpu: dict[_Key, float] = {}

    @property
    def ncores(self) -> float:
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
        wait: dict[_Key, float] = {}
        busy_s = wait_s = 0.0
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
            if self._schedstat:
                delay = _run_delay_s(p.pid)
                if delay is not None:
                    wait[key] = delay
                    before_wait = self._wait.get(key)
                    if before_wait is not None:
                        wait_s += max(0.0, delay - before_wait)
            rss += int(mem)
            before = self._cpu.get(key)
            if before is not None:
                busy_s += max(0.0, total - before)
            elif not first and created - boot >= self._last_boot_s - _BIRTH_SLACK_S:
                busy_s += total
        util: float | None = None
        if self._last_t is not None and t > self._last_t:
            util = busy_s / ((t - self._last_t) * self._ncores)
        waited: float | None = None
        if util is not None and self._schedstat and self._last_t is not None:
            waited = wait_s / ((t - self._last_t) * self._ncores)
        self._cpu = cpu
        self._wait = wait
        self._last_t = t
        self._last_boot_s = now_boot_s
        return CpuSample(t=t, util=util, nprocs=len(cpu), rss_bytes=rss, wait=waited)
