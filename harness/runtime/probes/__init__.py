"""Probes the supervisor samples: CPU of a process tree, RAM headroom, GPU through NVML,
and the same figures from a cluster job's node agents (``NodeProbe``).

All are synchronous (the supervisor calls them through ``asyncio.to_thread``) and degrade
to None rather than raising when a figure cannot be read.
"""

from __future__ import annotations

from harness.runtime.probes._cpu import CpuProbe, CpuSample, process_tree, usable_cpus
from harness.runtime.probes._gpu import DeviceSample, GpuProbe, GpuSample
from harness.runtime.probes._nodes import NodeProbe, NodeReading, NodesSample
from harness.runtime.probes._ram import RamSample, read_ram

__all__ = [
    "CpuProbe",
    "CpuSample",
    "DeviceSample",
    "GpuProbe",
    "GpuSample",
    "NodeProbe",
    "NodeReading",
    "NodesSample",
    "RamSample",
    "process_tree",
    "read_ram",
    "usable_cpus",
]
