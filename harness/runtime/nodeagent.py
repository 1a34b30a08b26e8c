"""The node agent: the root of each task of a Slurm job, on the node it runs on.

``python -P -m harness.runtime.nodeagent RUN_DIR TOKEN -- COMMAND...``

``srun`` starts one per task. Each one:

1. proves the run directory is the one the supervisor made, seen from this node: the file
   ``RUN_DIR/.visible`` must hold TOKEN. A run dir on a node's local disk (not on a
   filesystem the nodes share) fails here with one line and exit status 97, before the
   command runs, instead of a job whose metrics and samples nobody ever reads;
2. notes that it started (``nodes/<node>.<task>.json``: node, task, pid, time);
3. runs the command, outliving the signals aimed at the job as the local wrapper does
   (Slurm signals every process of the step, so the command gets them too), and writes
   the command's exit status to ``exit.json`` (task 0) or ``exit.task<N>.json``;
4. on the first task of each node (``SLURM_LOCALID`` 0) it also samples, every
   ``HARNESS_SAMPLE_EVERY_S`` seconds, the job's processes on this node (its own tree and
   every process carrying the run marker: the node's other tasks) with the same CPU, RAM
   and NVML probes the supervisor uses locally, and appends one JSON line per sample to
   ``probes.<node>.jsonl``. The supervisor reads them back
   (:class:`harness.runtime.probes.NodeProbe`), so every rule applies per node.

CPU use is a share of the CPUs Slurm gave the job on this node (``SLURM_CPUS_ON_NODE``),
not of the whole node: a 4-CPU job on a 64-core node that keeps its 4 CPUs busy reads
100 %. What it costs: one Python process per node waking once per sample interval (about
1-2 ms of CPU per sample on a few processes, measured in ``bench/slurm.py``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.job.protocol import EXIT_FILE
from harness.runtime.wrap import write_exit

__all__ = ["NOT_VISIBLE_EXIT", "VISIBLE_FILE", "node_name", "probe_file"]

VISIBLE_FILE = ".visible"  # in the run dir: the token the supervisor wrote before submitting
NOT_VISIBLE_EXIT = 97
NODES_DIR = "nodes"


def node_name() -> str:
    """This node as Slurm names it (``SLURMD_NODENAME``), else the short host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def probe_file(run_dir: Path, node: str) -> Path:
    return run_dir / f"probes.{node}.jsonl"


def _visible(run_dir: Path, token: str) -> bool:
    try:
        return (run_dir / VISIBLE_FILE).read_text(encoding="utf-8").strip() == token
    except OSError:
        return False


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return default


class _Sampler(threading.Thread):
    """Samples the job's processes on this node and appends the readings to the node's file."""

    def __init__(self, run_dir: Path, node: str, every_s: float, root: int) -> None:
        super().__init__(name="harness-node-agent", daemon=True)
        self.path = probe_file(run_dir, node)
        self.node, self.every_s, self.root = node, every_s, root
        self.run_id = os.environ.get("HARNESS_RUN_ID", "")
        self.stop = threading.Event()
        self.samples = 0
        self.primed_cpu_s = 0.0  # the agent's CPU once started, imports and NVML included

    def run(self) -> None:
        # Imported here: a task that is not its node's first never pays for psutil or NVML.
        from harness.runtime.probes import CpuProbe, GpuProbe, read_ram, usable_cpus

        _, usable = usable_cpus()
        alloc = _int_env("SLURM_CPUS_ON_NODE", 0)
        ncores = min(usable, alloc) if alloc > 0 else usable
        cpu = CpuProbe(self._processes, ncores=max(ncores, 1))
        gpu: Any = None
        gpu_error: str | None = None
        try:
            gpu = GpuProbe()
            if not gpu.available:
                gpu_error = gpu.unavailable_reason or "NVML unavailable"
        except Exception as exc:  # no NVML on this node: CPU figures still come
            gpu_error = f"NVML could not start: {exc}"
        cpu.sample()  # primes the interval
        self.primed_cpu_s = _cpu_s()
        while not self.stop.wait(self.every_s):
            try:
                line = self._reading(cpu, gpu, gpu_error, read_ram)
            except Exception as exc:  # one bad reading must not end the sampling
                line = {"t": time.time(), "node": self.node, "error": repr(exc)[:300]}
            self._append(line)
            self.samples += 1
        if gpu is not None:
            gpu.close()

    def _processes(self) -> list[Any]:
        import psutil

        from harness.runtime.procs import marked_processes

        found: dict[int, psutil.Process] = {}
        try:
            me = psutil.Process(self.root)
            for p in me.children(recursive=True):
                found[p.pid] = p
        except psutil.Error:
            pass
        if self.run_id:
            for p in marked_processes(self.run_id):
                found.setdefault(p.pid, p)
        found.pop(os.getpid(), None)
        return list(found.values())

    def _reading(self, cpu: Any, gpu: Any, gpu_error: str | None, read_ram: Any) -> dict[str, Any]:
        c = cpu.sample()
        line: dict[str, Any] = {
            "t": time.time(),
            "node": self.node,
            "cpu_util": None if c.util is None else min(c.util, 1.0),
            "cpu_available": None if c.available_util is None else min(c.available_util, 1.0),
            "nprocs": c.nprocs,
            "rss": c.rss_bytes,
            "ram_available": read_ram().available_bytes,
            "gpus": [],
            "gpu_error": gpu_error,
        }
        if gpu is not None and gpu.available:
            pids = [p.pid for p in self._processes()]
            g = gpu.sample(pids)
            line["gpus"] = [
                {
                    "index": d.index,
                    "util": d.util,
                    "sm_activity": d.sm_activity,
                    "mem_used": d.mem_used_bytes,
                    "mem_total": d.mem_total_bytes,
                    "held": bool(d.job_pids),
                }
                for d in g.devices
            ]
            if not g.available:
                line["gpu_error"] = gpu.unavailable_reason or "NVML unavailable"
        return line

    def _append(self, line: dict[str, Any]) -> None:
        data = (json.dumps(line, allow_nan=False, default=str) + "\n").encode()
        try:  # one write per line, appended: the supervisor never reads half a sample
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            pass  # the run dir went away: the job's exit status still tells the supervisor


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(
            "usage: python -m harness.runtime.nodeagent RUN_DIR TOKEN -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    run_dir, token, command = Path(argv[0]), argv[1], argv[3:]
    node = node_name()
    if not _visible(run_dir, token):
        print(
            f"harness: the run directory {run_dir} is not visible from node {node}: put the "
            "state directory on a filesystem the nodes share",
            file=sys.stderr,
        )
        return NOT_VISIBLE_EXIT
    task = _int_env("SLURM_PROCID", 0)
    exit_file = run_dir / (EXIT_FILE if task == 0 else f"exit.task{task}.json")
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"harness: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        write_exit(str(exit_file), 127)
        return 127
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    started = {"node": node, "task": task, "pid": os.getpid(), "t": time.time()}
    try:
        (run_dir / NODES_DIR).mkdir(exist_ok=True)
        (run_dir / NODES_DIR / f"{node}.{task}.json").write_text(json.dumps(started))
    except OSError:
        pass
    sampler = None
    if _int_env("SLURM_LOCALID", 0) == 0:
        try:
            every = float(os.environ.get("HARNESS_SAMPLE_EVERY_S", "1"))
        except ValueError:
            every = 1.0
        sampler = _Sampler(run_dir, node, min(max(every, 0.1), 60.0), os.getpid())
        sampler.start()
    code = child.wait()
    if sampler is not None:
        sampler.stop.set()
        sampler.join(timeout=5)
    write_exit(str(exit_file), code)
    # what the agent itself cost (its own CPU, not the command's): docs/slurm.md quotes it
    ended = {
        **started,
        "ended_t": time.time(),
        "agent_cpu_s": round(_cpu_s(), 4),
        "startup_cpu_s": round(sampler.primed_cpu_s, 4) if sampler is not None else None,
        "samples": sampler.samples if sampler is not None else 0,
    }
    try:
        (run_dir / NODES_DIR / f"{node}.{task}.json").write_text(json.dumps(ended))
    except OSError:
        pass
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
