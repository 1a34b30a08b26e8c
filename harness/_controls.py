"""Live controls: merge changes into a run's ``controls.json``, atomically.

The job validates values (it knows what ``lr`` may be); here we only make sure the
change is a JSON object of named values and that two writers cannot lose each other's
update (an exclusive lock around read-merge-write).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report import read_json, write_json_atomic

__all__ = ["ControlsError", "parse_control_value", "update_controls"]


class ControlsError(ValueError):
    """A control change is not usable; one line naming the key."""


def parse_control_value(raw: str) -> Any:
    """``0.01`` -> 0.01, ``{"echo": 1}`` -> dict, ``true`` -> True, anything else a string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def update_controls(run_dir: str | Path, changes: Mapping[str, Any]) -> dict[str, Any]:
    run_dir = Path(run_dir)
    for key in changes:
        if not isinstance(key, str) or not key.strip() or not key.replace("_", "").isalnum():
            raise ControlsError(f"control names are words like 'lr', got {key!r}")
    path = run_dir / "controls.json"
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
