"""Launching the framework jobs under the supervisor and reading what they wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.runtime.supervisor import Supervisor
from memory import TERMINAL, Run, Store
from tests.e2e.conftest import await_for, finish, get_run, make_spec

JOBS = Path(__file__).parent / "jobs"


def lines(run_dir: str | Path) -> list[dict[str, Any]]:
    text = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("event") == name]


def steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "event" not in r and "loss" in r]


async def launch(sup: Supervisor, script: str, name: str, **env: object) -> str:
    # The utilisation rule stays quiet (FAST_WATCH's grace): these jobs are about the
    # protocol, and a loaded 2-core machine would make a CPU verdict a coin toss.
    spec = make_spec(
        [sys.executable, str(JOBS / script)],
        name=name,
        env={"FW_STEPS": "12", **{k: str(v) for k, v in env.items()}},
        watch={"stall_s": 120.0},
    )
    return await sup.launch(spec)


async def run_to_end(sup: Supervisor, run_id: str) -> Run:
    return await finish(sup, run_id, timeout=240.0)


async def wait_for_step(store: Store, run_id: str, step: int) -> Path:
    run_dir = Path(get_run(store, run_id).run_dir)

    def reached() -> bool:
        status = get_run(store, run_id).status
        if status in TERMINAL:
            raise AssertionError(f"{run_id} is {status} before step {step}")
        try:
            return any(r.get("step", -1) >= step for r in steps(lines(run_dir)))
        except (OSError, ValueError):
            return False

    await await_for(reached, timeout=180.0, what=f"step {step} of {run_id}")
    return run_dir
