"""Samples the node agents of a Slurm job wrote (``probes.<node>.jsonl`` in the run dir).

The supervisor cannot see a cluster job's processes; the node agent on each node
(:mod:`harness.runtime.nodeagent`) samples them with the same CPU, RAM and NVML probes and
appends one JSON line per sample. :class:`NodeProbe` reads what is new in each node's
file and keeps the latest reading per node; :meth:`NodeProbe.combined` folds the fresh
ones into the figures a local sample has, so every rule applies unchanged:

- CPU: the *least* busy node's share of its allocated CPUs (one idle node of four is a
  wasted allocation and is what the rule must see), and the node that was it;
- RAM: the least headroom of any node;
- GPUs: every node's GPUs, numbered across the nodes in node-name order (the first
  node's are 0..n-1, the next node's follow), each with its ``held`` flag.

The files are written by a process of the job and are not trusted: a line that is not a
JSON object, is over 64 KiB, or holds values out of range is skipped, counted, never
raised. A reading older than ``stale_s`` (the node stopped writing) is dropped, so a dead
agent reads as no figure rather than as its last one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.devices import GpuReading
from harness.core.values import as_float

__all__ = ["NodeProbe", "NodeReading", "NodesSample"]

_MAX_LINE = 64 * 1024
_MAX_READ = 1024 * 1024  # per file per call: a flood is read over several calls
_MAX_NODES = 4096
_MAX_GPUS = 64  # per node


@dataclass(frozen=True)
class NodeReading:
    """One node's latest sample, as the node agent wrote it (checked)."""

    node: str
    t: float  # wall-clock time of the sample
    cpu_util: float | None
    cpu_available: float | None
    ram_available: int | None
    gpus: tuple[GpuReading, ...]
    gpu_error: str | None


@dataclass(frozen=True)
class NodesSample:
    """The fresh readings of every node, combined as one local sample would read."""

    nodes: tuple[NodeReading, ...]
    cpu_util: float | None
    cpu_available: float | None
    ram_available: int | None
    gpus: tuple[GpuReading, ...]
    gpu_error: str | None
    lowest: str | None  # the node whose CPU figure is the one shown and judged


def _fraction(v: Any) -> float | None:
    x = as_float(v)
    return None if x is None or not 0.0 <= x <= 1.0 else x


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None


def _gpu(raw: Any, index: int) -> GpuReading | None:
    if not isinstance(raw, dict):
        return None
    return GpuReading(
        index,
        util=_fraction(raw.get("util")),
        sm_activity=_fraction(raw.get("sm_activity")),
        mem_used=_count(raw.get("mem_used")),
        mem_total=_count(raw.get("mem_total")),
        held=raw.get("held") is True,
    )


def parse_reading(raw: Any) -> NodeReading | None:
    """A node agent's line as a reading; None for anything that is not one."""
    if not isinstance(raw, dict):
        return None
    node, t = raw.get("node"), as_float(raw.get("t"))
    if not isinstance(node, str) or not 0 < len(node) <= 255 or t is None:
        return None
    gpus_raw = raw.get("gpus")
    gpus = []
    if isinstance(gpus_raw, list):
        for i, g in enumerate(gpus_raw[:_MAX_GPUS]):
            reading = _gpu(g, i)
            if reading is not None:
                gpus.append(reading)
    error = raw.get("gpu_error")
    return NodeReading(
        node=node,
        t=t,
        cpu_util=_fraction(raw.get("cpu_util")),
        cpu_available=_fraction(raw.get("cpu_available")),
        ram_available=_count(raw.get("ram_available")),
        gpus=tuple(gpus),
        gpu_error=error[:300] if isinstance(error, str) else None,
    )


class NodeProbe:
    """Reads the node agents' files of one run dir (sync; call it off-loop)."""

    def __init__(
        self, run_dir: Path, *, stale_s: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.run_dir = run_dir
        self.stale_s = stale_s
        self._clock = clock
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self.latest: dict[str, NodeReading] = {}
        self.skipped = 0  # lines that were not readings

    def read(self) -> dict[str, NodeReading]:
        """Read what is new in every ``probes.*.jsonl``; the latest reading per node."""
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.run_dir)
                if e.name.startswith("probes.") and e.name.endswith(".jsonl")
            )
        except OSError:
            return dict(self.latest)
        for name in names[:_MAX_NODES]:
            self._read_file(name)
        return dict(self.latest)

    def _read_file(self, name: str) -> None:
        path = self.run_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            offset = self._offsets.get(name, 0)
            size = os.fstat(fd).st_size
            if size < offset:  # truncated or replaced: start again
                offset, self._partial[name] = 0, b""
            data = os.pread(fd, _MAX_READ, offset)
        except OSError:
            return
        finally:
            os.close(fd)
        self._offsets[name] = offset + len(data)
        buffer = self._partial.get(name, b"") + data
        *lines, rest = buffer.split(b"\n")
        self._partial[name] = rest if len(rest) <= _MAX_LINE else b""
        for line in lines:
            if not line.strip():
                continue
            reading = None
            if len(line) <= _MAX_LINE:
                try:
                    reading = parse_reading(json.loads(line))
                except ValueError:
                    reading = None
            if reading is None:
                self.skipped += 1
                continue
            known = self.latest.get(reading.node)
            if known is None or reading.t >= known.t:
                self.latest[reading.node] = reading

    def combined(self) -> NodesSample:
        """The fresh readings folded into one sample (see the module doc)."""
        self.read()
        now = self._clock()
        fresh = tuple(r for _, r in sorted(self.latest.items()) if now - r.t <= self.stale_s)
        cpus = [(r.cpu_util, r.node) for r in fresh if r.cpu_util is not None]
        lowest = min(cpus)[1] if cpus else None
        by_node = {r.node: r for r in fresh}
        chosen = by_node.get(lowest) if lowest is not None else None
        rams = [r.ram_available for r in fresh if r.ram_available is not None]
        gpus: list[GpuReading] = []
        for r in fresh:
            base = len(gpus)
            gpus += [
                GpuReading(
                    base + g.index, g.util, g.sm_activity, g.mem_used, g.mem_total, held=g.held
                )
                for g in r.gpus
            ]
        errors = [r.gpu_error for r in fresh if r.gpu_error]
        if not fresh:
            error: str | None = "no fresh sample from any node agent yet"
        else:
            error = errors[0] if errors and not gpus else None
        return NodesSample(
            nodes=fresh,
            cpu_util=chosen.cpu_util if chosen is not None else None,
            cpu_available=chosen.cpu_available if chosen is not None else None,
            ram_available=min(rams) if rams else None,
            gpus=tuple(gpus),
            gpu_error=error,
            lowest=lowest,
        )
