"""How fast each task is learnt on this machine (a benchmark, not a test).

    .venv/bin/python bench/tasks.py [--tasks echo not ...] [--steps N] [-- trainer args]

For each task, runs ``python -m model.train`` with the default config as a real
subprocess (fresh data directory, so data generation is included in the time), evaluates
every ``--eval-every`` steps, and reports the first step and the wall seconds since launch
at which held-out accuracy reached 98 % of the task's ceiling, and the final accuracy
against the ceiling. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from model.data import TASKS
from model.train import TASK_DEFAULTS


def run_task(task: str, steps: int | None, eval_every: int, extra: list[str]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{task}-"))
    metrics = tmp / "metrics.jsonl"
    env = dict(os.environ, HARNESS_METRICS=str(metrics), HARNESS_DATA_DIR=str(tmp / "data"))
    cmd = [sys.executable, "-m", "model.train", "--task", task, "--device", "cpu"]
    cmd += ["--eval-every", str(eval_every), "--out", str(tmp / "run")]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    launched = time.time()
    subprocess.run([*cmd, *extra], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - launched
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    start, end = lines[0], lines[-1]
    ceiling = start["ceiling"]
    evals = [m for m in lines if "avg_bit_acc" in m and "step" in m]
    hit = next((m for m in evals if m["avg_bit_acc"] >= 0.98 * ceiling), None)
    return {
        "task": task,
        "ceiling": ceiling,
        "steps_98": hit["step"] if hit else None,
        "seconds_98": hit["t"] - launched if hit else None,
        "final": end["avg_bit_acc"],
        "steps": end["steps"],
        "wall": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--steps", type=int, help="default: TASK_DEFAULTS per task")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("extra", nargs="*", help="more trainer arguments (after --)")
    a = p.parse_args()
    print(
        "| task | ceiling | steps to 98 % | s to 98 % | final acc | final / ceiling "
        "| steps | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task in a.tasks:
        steps = a.steps if a.steps is not None else TASK_DEFAULTS[task]["steps"]
        r = run_task(task, steps, a.eval_every, a.extra)
        s98 = "not reached" if r["steps_98"] is None else str(r["steps_98"])
        t98 = "-" if r["seconds_98"] is None else f"{r['seconds_98']:.0f}"
        print(
            f"| {task} | {r['ceiling']:.4f} | {s98} | {t98} | {r['final']:.4f} "
            f"| {r['final'] / r['ceiling']:.3f} | {r['steps']} | {r['wall']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
