"""GPU utilisation and memory through NVML (``pynvml`` from the nvidia-ml-py package).

NVML is probed once, at construction. Without the package, the library or a driver the
probe is ``available = False`` with a reason, and every sample field is None (never 0,
never an exception). During a sample each NVML call stands alone: an error degrades the
one field it feeds to None.

Two "busy" figures per device:

- ``util``: ``nvmlDeviceGetUtilizationRates().gpu`` / 100, the share of time at least one
  kernel ran. A single tiny kernel keeps it at 100 %, so it overstates real use;
- ``sm_activity``: the GPM metric ``NVML_GPM_METRIC_SM_UTIL`` / 100 (share of SMs busy,
  what DCGM calls SM activity), on GPUs that support GPM (Hopper and later). It needs two
  GPM samples, so the probe keeps the previous one per device: the first call after
  construction (or after a failed read) gives None.

``GpuSample.busy`` prefers ``sm_activity`` and falls back to ``util``.

The aggregates cover "the job's devices": those where a pid of the job runs according to
the compute and graphics process lists; when none is found there (NVML in a container
sees host pids, so this can miss), the ``devices`` the caller names; else every device.
Utilisation figures are averaged over the devices that reported one; memory figures are
summed and are None when any of those devices failed to report.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeviceSample:
    """One device. Fractions are 0..1; None where NVML could not tell."""

    index: int
    name: str | None
    util: float | None
    sm_activity: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    job_pids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class GpuSample:
    """A reading of every device plus aggregates over the job's devices.

    ``job_devices`` are the indices the aggregates cover. ``attributed`` is True when they
    were found from the job's pids, False when the probe fell back to the caller's
    devices or to all devices, None when NVML is unavailable or no process list could be
    read.
    """

    available: bool
    devices: tuple[DeviceSample, ...] = ()
    job_devices: tuple[int, ...] = ()
    util: float | None = None
    sm_activity: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    attributed: bool | None = None

    @property
    def busy(self) -> float | None:
        """The figure a utilisation rule should use: SM activity where known, else util."""
        return self.sm_activity if self.sm_activity is not None else self.util


_UNAVAILABLE = GpuSample(available=False)


class _Gpm:
    """Two GPM sample buffers used in turn; ``prev`` holds the last good reading."""

    def __init__(self, buffers: tuple[Any, Any]) -> None:
        self.buffers = buffers
        self.next = 0
        self.prev: Any | None = None


class GpuProbe:
    """NVML probe (sync; the supervisor calls it through ``asyncio.to_thread``).

    ``nvml`` is the pynvml module or a stand-in with the same names; by default pynvml is
    imported here, lazily, so the harness imports fine on machines without it.
    """

    def __init__(self, nvml: Any | None = None) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._handles: list[Any] = []
        self._names: list[str | None] = []
        self._gpm: dict[int, _Gpm] = {}
        self.available = False
        self.unavailable_reason: str | None = None
        self._start(nvml)

    @property
    def device_count(self) -> int:
        return len(self._handles)

    def _start(self, nvml: Any | None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                self.unavailable_reason = f"nvidia-ml-py is not installed: {exc}"
                return
            nvml = pynvml
        # NVMLLibraryMismatchError: a newer binding calling a function an older driver lacks.
        names = ("NVMLError", "NVMLLibraryMismatchError")
        found = [getattr(nvml, n, None) for n in names]
        self._errors = (
            OSError,
            *(e for e in found if isinstance(e, type) and issubclass(e, Exception)),
        )
        try:
            nvml.nvmlInit()
        except self._errors as exc:
            self.unavailable_reason = f"NVML could not start: {_describe(exc)}"
            return
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except self._errors as exc:
            self.unavailable_reason = f"NVML could not list devices: {_describe(exc)}"
            self._shutdown(nvml)
            return
        if not handles:
            self.unavailable_reason = "NVML found no GPU"
            self._shutdown(nvml)
            return
        self._nvml = nvml
        self._handles = handles
        self._names = [self._name(h) for h in handles]
        for i, h in enumerate(handles):
            gpm = self._gpm_setup(h)
            if gpm is not None:
                self._gpm[i] = gpm
        self.available = True

    def _name(self, handle: Any) -> str | None:
        try:
            name = self._nvml.nvmlDeviceGetName(handle)
        except self._errors:
            return None
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)

    def _gpm_setup(self, handle: Any) -> _Gpm | None:
        nvml = self._nvml
        if not hasattr(nvml, "nvmlGpmQueryDeviceSupport"):
            return None  # an nvidia-ml-py older than GPM
        try:
            if not nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
                return None
            first = nvml.nvmlGpmSampleAlloc()
        except self._errors:
            return None
        try:
            second = nvml.nvmlGpmSampleAlloc()
        except self._errors:
            self._free(first)
            return None
        return _Gpm((first, second))

    def sample(self, pids: Collection[int] = (), devices: Sequence[int] | None = None) -> GpuSample:
        """Read every device; aggregate over the job's devices (see the module doc)."""
        with self._lock:
            if not self.available:
                return _UNAVAILABLE
            wanted = set(pids)
            readings: list[DeviceSample] = []
            lists_read = False
            for i, h in enumerate(self._handles):
                on_device = self._device_pids(h)
                lists_read = lists_read or on_device is not None
                mem = self._memory(h)
                readings.append(
                    DeviceSample(
                        index=i,
                        name=self._names[i],
                        util=self._util(h),
                        sm_activity=self._sm_activity(i, h),
                        mem_used_bytes=mem[0],
                        mem_total_bytes=mem[1],
                        job_pids=sorted(wanted & on_device) if on_device else [],
                    )
                )
        return _aggregate(tuple(readings), devices, lists_read)

    def _util(self, handle: Any) -> float | None:
        try:
            rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
        except self._errors:
            return None
        return _fraction(rates.gpu)

    def _memory(self, handle: Any) -> tuple[int | None, int | None]:
        try:
            info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
        except self._errors:
            return None, None
        return int(info.used), int(info.total)

    def _device_pids(self, handle: Any) -> set[int] | None:
        """Pids on the device from both process lists; None when neither could be read."""
        found: set[int] | None = None
        for query in (
            self._nvml.nvmlDeviceGetComputeRunningProcesses,
            self._nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            try:
                procs = query(handle)
            except self._errors:
                continue
            found = (found or set()) | {int(p.pid) for p in procs}
        return found

    def _sm_activity(self, index: int, handle: Any) -> float | None:
        gpm = self._gpm.get(index)
        if gpm is None:
            return None
        nvml = self._nvml
        current = gpm.buffers[gpm.next]
        try:
            nvml.nvmlGpmSampleGet(handle, current)
        except self._errors:
            gpm.prev = None
            return None
        previous, gpm.prev = gpm.prev, current
        gpm.next ^= 1
        if previous is None:
            return None
        query = nvml.c_nvmlGpmMetricsGet_t()
        query.version = nvml.NVML_GPM_METRICS_GET_VERSION
        query.numMetrics = 1
        query.sample1 = previous
        query.sample2 = current
        query.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
        try:
            nvml.nvmlGpmMetricsGet(query)
        except self._errors:
            return None
        metric = query.metrics[0]
        if metric.nvmlReturn != nvml.NVML_SUCCESS:
            return None
        return _fraction(metric.value)

    def close(self) -> None:
        """Free GPM buffers and shut NVML down, once. Later samples are all None."""
        with self._lock:
            if not self.available:
                return
            for gpm in self._gpm.values():
                for buffer in gpm.buffers:
                    self._free(buffer)
            self._gpm.clear()
            self._shutdown(self._nvml)
            self._handles = []
            self.available = False
            self.unavailable_reason = "probe closed"

    def _free(self, buffer: Any) -> None:
        try:
            self._nvml.nvmlGpmSampleFree(buffer)
        except self._errors:
            pass

    def _shutdown(self, nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except self._errors:
            pass

    def __enter__(self) -> GpuProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _aggregate(
    readings: tuple[DeviceSample, ...], devices: Sequence[int] | None, lists_read: bool
) -> GpuSample:
    chosen = [d for d in readings if d.job_pids]
    attributed: bool | None = bool(chosen)
    if not chosen:
        attributed = False if lists_read else None
        if devices:
            named = set(devices)
            chosen = [d for d in readings if d.index in named]
        else:
            chosen = list(readings)
    return GpuSample(
        available=True,
        devices=readings,
        job_devices=tuple(d.index for d in chosen),
        util=_mean([d.util for d in chosen]),
        sm_activity=_mean([d.sm_activity for d in chosen]),
        mem_used_bytes=_total([d.mem_used_bytes for d in chosen]),
        mem_total_bytes=_total([d.mem_total_bytes for d in chosen]),
        attributed=attributed,
    )


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _total(values: list[int | None]) -> int | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _fraction(percent: float) -> float:
    return min(1.0, max(0.0, float(percent) / 100.0))


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
