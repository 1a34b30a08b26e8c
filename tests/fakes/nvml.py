"""A fake NVML (the ``pynvml`` module of nvidia-ml-py), specified against the real one.

Every public name of :class:`FakeNvml` is also a name of pynvml (checked in
``tests/harness/runtime/test_probes.py``); structs and errors are pynvml's own, so a
probe that works on the fake calls NVML as a real GPU machine would be called. Hand it to
``GpuProbe(nvml=...)``, and that probe to ``Supervisor(gpu=...)``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml

MiB = 1024**2
GiB = 1024**3

__all__ = ["FakeNvml", "nvml_error"]


def nvml_error(code: int = pynvml.NVML_ERROR_UNKNOWN) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class FakeNvml:
    """``count`` devices (two by default); those in ``sm_util_percent`` support GPM.

    By default device 0 (an H100 at 90 % util, 55 % SM activity) runs pids 111 and 500,
    device 1 (an A16 at 40 %, no GPM) pid 222 and graphics pid 333; further devices are
    idle H100s with no process. Tests set the dicts to what they need. Names in
    ``failing`` raise NVMLError. GPM samples are real buffers whose address identifies the
    device and the order they were taken in.
    """

    NVMLError = pynvml.NVMLError
    NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_SM_UTIL = pynvml.NVML_GPM_METRIC_SM_UTIL
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t

    def __init__(self, *, init_error: int | None = None, count: int = 2) -> None:
        self._init_error = init_error
        self._count = count
        self.failing: set[str] = set()
        extra = range(2, count)
        self.names = {0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA A16"}
        self.names.update({i: "NVIDIA H100 80GB HBM3" for i in extra})
        self.util_percent: dict[int, int] = {0: 90, 1: 40, **{i: 0 for i in extra}}
        self.sm_util_percent: dict[int, float] = {0: 55.0, **{i: 0.0 for i in extra}}
        self.mem = {0: (3 * GiB, 80 * GiB), 1: (1 * GiB, 16 * GiB)}
        self.mem.update({i: (0, 80 * GiB) for i in extra})
        self.compute_pids: dict[int, list[int]] = {0: [111, 500], 1: [222]}
        self.compute_pids.update({i: [] for i in extra})
        self.graphics_pids: dict[int, list[int]] = {0: [], 1: [333]}
        self.graphics_pids.update({i: [] for i in extra})
        self.inits = 0
        self.shutdowns = 0
        self.freed = 0
        self._buffers: dict[int, Any] = {}
        self._taken: dict[int, tuple[int, int]] = {}  # buffer address -> (device, order)
        self._order = 0

    def _call(self, name: str) -> None:
        if name in self.failing:
            raise nvml_error()

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise nvml_error(self._init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return self._count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle: tuple[str, int]) -> str:
        self._call("nvmlDeviceGetName")
        return self.names[handle[1]]

    def nvmlDeviceGetUtilizationRates(self, handle: tuple[str, int]) -> Any:
        self._call("nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=self.util_percent[handle[1]], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: tuple[str, int]) -> Any:
        self._call("nvmlDeviceGetMemoryInfo")
        used, total = self.mem[handle[1]]
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def _procs(self, pids: list[int]) -> list[Any]:
        infos = [pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=MiB) for pid in pids]
        return [pynvml.nvmlStructToFriendlyObject(info) for info in infos]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: tuple[str, int]) -> list[Any]:
        self._call("nvmlDeviceGetComputeRunningProcesses")
        return self._procs(self.compute_pids[handle[1]])

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: tuple[str, int]) -> list[Any]:
        self._call("nvmlDeviceGetGraphicsRunningProcesses")
        return self._procs(self.graphics_pids[handle[1]])

    def nvmlGpmQueryDeviceSupport(self, handle: tuple[str, int]) -> Any:
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = int(handle[1] in self.sm_util_percent)
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        buffer = ctypes.create_string_buffer(16)
        sample = ctypes.cast(buffer, pynvml.c_nvmlGpmSample_t)
        self._buffers[_address(sample)] = buffer
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        del self._buffers[_address(sample)]
        self.freed += 1

    def nvmlGpmSampleGet(self, handle: tuple[str, int], sample: Any) -> Any:
        self._call("nvmlGpmSampleGet")
        assert _address(sample) in self._buffers, "sample was not allocated or was freed"
        self._order += 1
        self._taken[_address(sample)] = (handle[1], self._order)
        return sample

    def nvmlGpmMetricsGet(self, query: Any) -> Any:
        self._call("nvmlGpmMetricsGet")
        if query.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        device1, order1 = self._taken[_address(query.sample1)]
        device2, order2 = self._taken[_address(query.sample2)]
        if device1 != device2 or order1 >= order2:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        for i in range(query.numMetrics):
            metric = query.metrics[i]
            if metric.metricId == pynvml.NVML_GPM_METRIC_SM_UTIL:
                metric.value = self.sm_util_percent[device1]
                metric.nvmlReturn = pynvml.NVML_SUCCESS
            else:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return query


def _address(sample: Any) -> int:
    address = ctypes.cast(sample, ctypes.c_void_p).value
    assert address is not None
    return address
