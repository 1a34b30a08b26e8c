"""Throughput and utilisation of the default training config (a benchmark, not a test).

    .venv/bin/python bench/model_throughput.py [--task echo] [--seconds 10]

Runs ``python -m model.train`` as a real subprocess with the default config, waits for the
``train`` phase, then measures over a window: samples per second (from the job's own
metrics lines), the CPU time of the job's process tree as a fraction of the whole machine
(what the supervisor's utilisation rule measures for CPU jobs), the machine's total CPU
use and the share of it taken by other processes, the job's CPU *demand* (on-CPU plus
run-queue wait of its threads: what it would use on an otherwise idle machine), and on a
GPU the NVML utilisation. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _demand_s(proc: psutil.Process) -> float | None:
    """Seconds the job's threads ran or sat runnable waiting for a core (Linux schedstat).

    On a machine shared with other work, CPU time alone understates what the job would
    use alone; on-CPU plus run-queue wait is what it asked for. None where unsupported.
    """
    total = 0
    try:
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, _ = (int(x) for x in f.read().split())
            total += run_ns + wait_ns
    except (OSError, ValueError):
        return None
    return total / 1e9


def _nvml_util() -> Any:
    """A callable returning GPU 0 utilisation in %, or None without NVML or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:
        return None


def measure(device: str, task: str, seconds: float, extra: list[str]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    metrics = tmp / "metrics.jsonl"
    env = dict(os.environ, HARNESS_METRICS=str(metrics))
    cmd = [sys.executable, "-m", "model.train", "--task", task, "--device", device]
    cmd += ["--steps", "1000000", "--eval-every", "0", "--checkpoint-every", "0", "--out", str(tmp)]
    proc = subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    gpu = _nvml_util() if device.startswith("cuda") else None
    try:
        deadline = time.monotonic() + 300
        while not any("loss" in m for m in _lines(metrics)):  # first step line: warm
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"trainer did not start training: {cmd}")
            time.sleep(0.1)
        m0 = psutil.cpu_times()
        cpu0, t0, n0 = _tree_cpu(ps), time.monotonic(), len(_lines(metrics))
        demand0 = _demand_s(ps)
        gpu_samples = []
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            if gpu is not None:
                gpu_samples.append(gpu())
        cpu1, t1 = _tree_cpu(ps), time.monotonic()
        demand1 = _demand_s(ps)
        m1 = psutil.cpu_times()
        window = [m for m in _lines(metrics)[n0:] if "samples_per_s" in m]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    start = _lines(metrics)[0]
    ncpu = psutil.cpu_count() or 1
    busy = sum(m1) - sum(m0) - (m1.idle - m0.idle) - (m1.iowait - m0.iowait)
    machine = busy / (sum(m1) - sum(m0))
    job = (cpu1 - cpu0) / ((t1 - t0) * ncpu)
    demand = None
    if demand0 is not None and demand1 is not None:
        demand = min(1.0, (demand1 - demand0) / ((t1 - t0) * ncpu))
    return {
        "device": device,
        "batch": start.get("batch"),
        "params": start.get("params"),
        "samples_per_s": sum(m["samples_per_s"] for m in window) / max(1, len(window)),
        "job_cpu_fraction": job,
        "machine_cpu_fraction": machine,
        "other_cpu_fraction": max(0.0, machine - job),
        "demand_fraction": demand,
        "gpu_util": sum(gpu_samples) / len(gpu_samples) if gpu_samples else None,
        "cores": ncpu,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="echo")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("extra", nargs="*", help="more trainer arguments (after --)")
    a = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [measure(d, a.task, a.seconds, a.extra) for d in devices]
    print(
        f"| device | batch | params | samples/s | job CPU (of {rows[0]['cores']} cores) "
        "| machine CPU | other processes | job demand | GPU util |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = "n/a" if r["gpu_util"] is None else f"{r['gpu_util']:.0f} %"
        demand = "n/a" if r["demand_fraction"] is None else f"{r['demand_fraction']:.0%}"
        print(
            f"| {r['device']} | {r['batch']} | {r['params']:,} | {r['samples_per_s']:.0f} "
            f"| {r['job_cpu_fraction']:.0%} | {r['machine_cpu_fraction']:.0%} "
            f"| {r['other_cpu_fraction']:.0%} | {demand} | {gpu} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
