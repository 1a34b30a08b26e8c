"""The job side of the job protocol, stdlib only (DESIGN section 3).

Any training script can use this to talk to the supervisor without depending on it::

    from harness.job import Reporter

    rep = Reporter()                      # paths from HARNESS_METRICS / HARNESS_CONTROLS
    rep.start(total_steps=1000, device="cpu")
    for step in range(1000):
        changed = rep.controls()          # None, or the new controls dict when the file changed
        ...
        rep.step(step, loss=loss, lr=lr)
    rep.end(avg_bit_acc=0.94)

``rep.alert("validation set is empty", level="error")`` raises the job's own alert: an
immediate Discord message and an incident.

Each call appends one JSON object per line to ``metrics.jsonl`` with a single ``write``
on a file opened in append mode, so lines from one writer never interleave. Outside
the harness (no environment variables and no paths given) the reporter is disabled and
every call is a cheap no-op, so the same script runs bare.

Under torchrun (``RANK`` in the environment) only rank 0 writes ``metrics.jsonl``, the
stream the supervisor judges; a reporter on any other rank writes
``metrics.rank<R>.jsonl`` beside it (its throughput, so a straggler rank shows), unless
a path is given explicitly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness._atomic import json_safe, read_json
from harness.job.protocol import ALERT_LEVELS, ENV_CONTROLS, ENV_METRICS, ENV_RUN_ID

__all__ = ["Reporter"]


class Reporter:
    """Writes the metrics stream and reads live controls for one run."""

    def __init__(
        self,
        metrics_path: str | os.PathLike[str] | None = None,
        controls_path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Any = time.time,
    ) -> None:
        env = os.environ if environ is None else environ
        metrics = metrics_path if metrics_path is not None else env.get(ENV_METRICS)
        controls = controls_path if controls_path is not None else env.get(ENV_CONTROLS)
        self.metrics_path = Path(metrics) if metrics else None
        rank = env.get("RANK", "0")  # set by torchrun for each of its processes
        self.rank = int(rank) if rank.isascii() and rank.isdigit() else 0
        if self.metrics_path is not None and metrics_path is None and self.rank:
            self.metrics_path = self.metrics_path.with_name(f"metrics.rank{self.rank}.jsonl")
        self.controls_path = Path(controls) if controls else None
        self.run_id = env.get(ENV_RUN_ID)
        self._clock = clock
        self._fd: int | None = None
        self._controls_mtime: int | None = None

    @property
    def enabled(self) -> bool:
        return self.metrics_path is not None

    # -- writing ---------------------------------------------------------------------

    def emit(self, **fields: Any) -> None:
        """Append one line; ``t`` is added when missing."""
        if self.metrics_path is None:
            return
        fields.setdefault("t", round(self._clock(), 6))
        line = json.dumps(json_safe(fields), separators=(",", ":")) + "\n"
        if self._fd is None:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, line.encode("utf-8"))

    def start(self, *, total_steps: int, device: str, **extra: Any) -> None:
        self.emit(event="start", total_steps=total_steps, device=device, **extra)

    def step(self, step: int, **metrics: Any) -> None:
        self.emit(step=step, **metrics)

    def phase(self, name: str, **extra: Any) -> None:
        """Mark the phase the job is in: ``train``, ``eval``, ``checkpoint`` or ``data``."""
        self.emit(event="phase", phase=name, **extra)

    def checkpoint(self, path: str | os.PathLike[str], step: int, **extra: Any) -> None:
        self.emit(event="checkpoint", path=str(path), step=step, **extra)

    def applied(self, changes: Mapping[str, Any], **extra: Any) -> None:
        """Report controls the job has applied (or rejected, with ``rejected=...``)."""
        self.emit(event="controls", applied=dict(changes), **extra)

    def alert(self, text: str, level: str = "warn", **extra: Any) -> None:
        """Raise the job's own alert: the supervisor sends it to Discord at once and records
        an incident. ``level`` is ``info``, ``warn`` or ``error``; ``extra`` travels as
        evidence (a ``mistake`` id such as ``"M-026"`` links the incident to the catalogue).
        """
        if level not in ALERT_LEVELS:
            raise ValueError(f"alert level {level!r}: expected one of {', '.join(ALERT_LEVELS)}")
        self.emit(event="alert", level=level, text=str(text), **extra)

    def end(self, **final: Any) -> None:
        self.emit(event="end", **final)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading controls --------------------------------------------------------------

    def controls(self, *, force: bool = False) -> dict[str, Any] | None:
        """The controls when ``controls.json`` changed since the last call, else None.

        A file that is missing or not a JSON object returns None (and is retried on its
        next change); the job keeps its current values.
        """
        if self.controls_path is None:
            return None
        try:
            mtime = self.controls_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if not force and mtime == self._controls_mtime:
            return None
        self._controls_mtime = mtime
        try:
            return read_json(self.controls_path)
        except (OSError, ValueError):
            return None
