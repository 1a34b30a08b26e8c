"""The job side of the job protocol, stdlib only (DESIGN section 3).

Any training script can use this to talk to the supervisor without depending on it::

    from harness.report import Reporter

    rep = Reporter()                      # paths from HARNESS_METRICS / HARNESS_CONTROLS
    rep.start(total_steps=1000, device="cpu")
    for step in range(1000):
        changed = rep.controls()          # None, or the new controls dict when the file changed
        ...
        rep.step(step, loss=loss, lr=lr)
    rep.end(avg_bit_acc=0.94)

Each call appends one JSON object per line to ``metrics.jsonl`` with a single ``write``
on a file opened in append mode, so lines from one writer never interleave. Outside
the harness (no environment variables and no paths given) the reporter is disabled and
every call is a cheap no-op, so the same script runs bare.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Reporter", "read_json", "write_json_atomic", "write_text_atomic"]

ENV_RUN_ID = "HARNESS_RUN_ID"
ENV_RUN_DIR = "HARNESS_RUN_DIR"
ENV_METRICS = "HARNESS_METRICS"
ENV_CONTROLS = "HARNESS_CONTROLS"


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf; write them as strings the supervisor recognises."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _clean(value.item())
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as a JSON object, atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object; raises ValueError naming the file when it is not one."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


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
        line = json.dumps(_clean(fields), separators=(",", ":")) + "\n"
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
