"""The run's utilisation series, ``<run dir>/util.jsonl``: what the chart's lower panel shows.

The watch loop samples its probes every ``watch.sample_every_s`` (a second or two); the
readings themselves are kept nowhere else. :class:`UtilLog` appends one line per
``every_s`` (10 s) at most::

    {"t": 1764640000.0, "cpu": 0.93, "gpu": {"0": 0.97, "1": 0.12}}

``t`` is wall-clock seconds, ``cpu`` the job's tree as a fraction of the machine,
``gpu`` the busy figure (SM activity, else utilisation) of each GPU the job holds (of
every GPU read, for a ``cuda`` job that holds none yet); absent values are left out.

Bounded: once the file has ``max_lines`` lines, every other line is dropped (the file is
rewritten atomically) and the interval doubles, so a run of any length keeps at most
``max_lines`` lines (about 120 KB) spread over all of it. The run dir is the job's, so
the file is opened with ``O_NOFOLLOW`` and only ever replaced, never followed; a file
that cannot be written stops the series with one log line, never the watch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from harness._atomic import write_text_atomic

__all__ = ["MAX_UTIL_LINES", "UTIL_EVERY_S", "UTIL_FILE", "UtilLog"]

log = logging.getLogger("harness.supervisor")

UTIL_FILE = "util.jsonl"
UTIL_EVERY_S = 10.0
MAX_UTIL_LINES = 2000
_OPEN = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _fraction(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(min(max(value, 0.0), 1.0), 4)


class UtilLog:
    """Appends the downsampled utilisation of one run to its ``util.jsonl``."""

    def __init__(
        self, path: Path, *, every_s: float = UTIL_EVERY_S, max_lines: int = MAX_UTIL_LINES
    ) -> None:
        if every_s <= 0 or max_lines < 4:
            raise ValueError("every_s must be positive and max_lines at least 4")
        self.path = path
        self.every_s = every_s
        self.max_lines = max_lines
        self._lines: int | None = None  # counted on the first write (a re-adopted run)
        self._next = 0.0
        self.broken = False

    def due(self, t: float) -> bool:
        """Whether a sample at wall-clock ``t`` would be kept (cheap; no file access)."""
        return not self.broken and t >= self._next

    def add(self, t: float, cpu: float | None, gpus: Mapping[str, float | None]) -> bool:
        """Append one reading if it is due; True when a line was written. Never raises."""
        if not self.due(t):
            return False
        record: dict[str, object] = {"t": round(t, 3)}
        if (c := _fraction(cpu)) is not None:
            record["cpu"] = c
        shown = {k: f for k, v in gpus.items() if (f := _fraction(v)) is not None}
        if shown:
            record["gpu"] = shown
        if len(record) == 1:
            return False  # nothing was measured: not a point of the series
        try:
            if self._lines is None:
                self._lines = self._count()
            if self._lines >= self.max_lines:
                self._compact()
            self._append(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            self.broken = True
            log.warning("%s: the utilisation series stops here: %s", self.path, exc.strerror or exc)
            return False
        self._lines += 1
        self._next = t + self.every_s
        return True

    def _append(self, line: str) -> None:
        fd = os.open(self.path, _OPEN, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def _read_lines(self) -> list[str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            return [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]

    def _count(self) -> int:
        return len(self._read_lines())

    def _compact(self) -> None:
        """Keep every other line (the last one always) and double the interval."""
        lines = self._read_lines()
        kept = lines[::2]
        if lines and kept[-1] != lines[-1]:
            kept.append(lines[-1])
        write_text_atomic(self.path, "".join(ln + "\n" for ln in kept))
        self._lines = len(kept)
        self.every_s *= 2
