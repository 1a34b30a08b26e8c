"""Live controls: merge changes into a run's ``controls.json``, atomically.

The job validates values (it knows what ``lr`` may be); here we only make sure the
change is a JSON object of named values and that two writers cannot lose each other's
update (an exclusive lock around read-merge-write).
"""

from __future__ import annotations

import fcntl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness._atomic import read_json, write_json_atomic
from harness.errors import ControlsError
from harness.job.protocol import CONTROLS_FILE

__all__ = ["update_controls"]


def update_controls(run_dir: str | Path, changes: Mapping[str, Any]) -> dict[str, Any]:
    run_dir = Path(run_dir)
    for key in changes:
        if not isinstance(key, str) or not key.strip() or not key.replace("_", "").isalnum():
            raise ControlsError(f"control names are words like 'lr', got {key!r}")
    path = run_dir / CONTROLS_FILE
    if not run_dir.is_dir():
        raise ControlsError(f"run directory {run_dir} does not exist")
    with (run_dir / ".controls.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_json(path) if path.exists() else {}
        except ValueError:
            current = {}
        merged = {**current, **dict(changes)}
        write_json_atomic(path, merged)
    return merged
