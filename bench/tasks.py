"""How fast each task's preset learns on this machine (a benchmark, not a test).

    .venv/bin/python bench/tasks.py [--presets echo not ...] [--eval-every 25] [--set k=v ...]

For each preset, runs ``harness run <preset>`` exactly as a user would (its own
HARNESS_HOME and a fresh data directory, so preflight and data generation are in the
time), with one override: an evaluation every ``--eval-every`` steps, to see when the
held-out accuracy first reaches 98 % of the task's ceiling. Meanwhile it samples the job's
process tree (everything under the `harness run` process, not the supervisor itself) with
the supervisor's own CPU probe and averages, over the samples taken in the ``train``
phase, the job's CPU use as a fraction of all cores ("job CPU") and as a share of the CPU
time it could have had ("available", what the utilisation rule judges). The load average
at the start says how busy the machine was with other work. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from harness.runtime import CpuProbe

PRESETS = ["echo", "not", "shift", "count", "mirror"]  # the task presets harness ships
ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _phase(metrics: Path) -> str | None:
    phases = [m["phase"] for m in _lines(metrics) if m.get("event") == "phase"]
    return phases[-1] if phases else None


def _job_tree(root: psutil.Process) -> Iterator[psutil.Process]:
    """The job: every descendant of `harness run` (its wrapper and the trainer)."""
    try:
        yield from root.children(recursive=True)
    except psutil.Error:
        return


def run_preset(name: str, eval_every: int, overrides: list[str]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    env = dict(os.environ, HARNESS_HOME=str(tmp / "home"), HARNESS_DATA_DIR=str(tmp / "data"))
    env = {k: v for k, v in env.items() if not k.startswith("HARNESS_DISCORD")}
    sets = [f"args.eval_every={eval_every}", *overrides]
    cmd = [sys.executable, "-m", "harness", "run", name]
    for s in sets:
        cmd += ["--set", s]
    load = os.getloadavg()[0]
    launched = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    probe = CpuProbe(lambda: _job_tree(root))
    samples: list[tuple[float, float | None]] = []
    metrics: Path | None = None
    while proc.poll() is None:
        time.sleep(1.0)
        sample = probe.sample()
        if metrics is None:
            found = sorted((tmp / "home" / "runs").glob("*/metrics.jsonl"))
            metrics = found[0] if found else None
        if sample.util is not None and metrics is not None and _phase(metrics) == "train":
            samples.append((sample.util, sample.available_util))
    wall = time.time() - launched
    runs = json.loads(
        subprocess.run(
            [sys.executable, "-m", "harness", "runs", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    run = runs[0]
    run_dir = Path(run["run_dir"])
    spec = json.loads((run_dir / "spec.json").read_text())
    lines = _lines(run_dir / "metrics.jsonl")
    start, end = lines[0], lines[-1]
    ceiling = float(start["ceiling"])
    evals = [m for m in lines if "avg_bit_acc" in m and "step" in m]
    hit = next((m for m in evals if m["avg_bit_acc"] >= 0.98 * ceiling), None)
    avail = [a for _, a in samples if a is not None]
    return {
        "task": start.get("task", name),
        "status": run["status"],
        "gate": ", ".join(f"{v}" for v in spec["gates"].values()),
        "ceiling": ceiling,
        "batch": start.get("batch"),
        "steps_98": hit["step"] if hit else None,
        "seconds_98": hit["t"] - launched if hit else None,
        "final": end.get("avg_bit_acc"),
        "steps": end.get("steps"),
        "wall": wall,
        "job_cpu": sum(u for u, _ in samples) / len(samples) if samples else None,
        "available": sum(avail) / len(avail) if avail else None,
        "load": load,
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--set", action="append", default=[], help="more overrides, e.g. args.lr=1e-3")
    a = p.parse_args()
    print(
        "| task | ceiling | gate | batch | steps to 98 % | s to 98 % | final acc "
        f"| final / ceiling | steps | wall s | job CPU (of {psutil.cpu_count()} cores), train "
        "| available | load avg | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.presets:
        r = run_preset(name, a.eval_every, a.set)
        s98 = "not reached" if r["steps_98"] is None else str(r["steps_98"])
        t98 = "-" if r["seconds_98"] is None else f"{r['seconds_98']:.0f}"
        final = "-" if r["final"] is None else f"{r['final']:.4f}"
        ratio = "-" if r["final"] is None else f"{r['final'] / r['ceiling']:.3f}"
        print(
            f"| {r['task']} | {r['ceiling']:.4f} | {r['gate']} | {r['batch']} | {s98} | {t98} "
            f"| {final} | {ratio} | {r['steps']} | {r['wall']:.0f} | {_pct(r['job_cpu'])} "
            f"| {_pct(r['available'])} | {r['load']:.1f} | {r['status']} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
