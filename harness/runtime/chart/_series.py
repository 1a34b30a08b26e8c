"""What a chart shows, read from the run dir (no matplotlib): the daemon, the renderer and
``harness plot`` share it.

The chart of a run is described by a small JSON object (:func:`describe`, built by the
supervisor side from the run's row and its incidents; this is what the renderer reads on
stdin)::

    {"run_id": "...", "name": "echo", "status": "running", "run_dir": "/…/runs/<id>",
     "key_metric": "acc", "device": "cuda:0", "started_at": 1764640000.0,
     "incidents": [{"t": 1764640100.0, "rule": "utilisation", "severity": "warn"}]}

:func:`load_series` then reads ``metrics.jsonl`` (step lines: ``step``, ``loss``, the key
metric, ``t``) and ``util.jsonl`` (see ``_util``) from ``run_dir``, each thinned to at most
``max_points`` points spread over the whole run (a run of a million steps costs one pass
over its file and a few thousand points). Files in the run dir are the job's: only a
regular file is read, opened without following a link and without blocking; anything
else reads as no points. Lines that are not JSON objects, and values that are not finite
numbers, are skipped.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.format import key_metric_of
from harness.job.protocol import METRICS_FILE

from ._util import UTIL_FILE

if TYPE_CHECKING:
    from memory import Run

__all__ = ["MAX_POINTS", "Marker", "Series", "describe", "describe_run", "load_series"]

MAX_POINTS = 1500
_MAX_LINE = 1 << 20
_BATCH = 1024
_MAX_INCIDENTS = 50  # markers on one chart; more would be a smear


@dataclass
class _Thin:
    """At most ``cap`` items spread evenly over everything added (the last one kept)."""

    cap: int
    items: list[Any] = field(default_factory=list)
    stride: int = 1
    seen: int = 0
    last: Any = None

    def add(self, item: Any) -> None:
        if self.seen % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1
        self.last = item

    def result(self) -> list[Any]:
        if self.last is not None and (not self.items or self.items[-1] is not self.last):
            return [*self.items, self.last]
        return list(self.items)


@dataclass(frozen=True)
class Marker:
    """An incident on the chart: when, and the rule that raised it."""

    t: float
    rule: str
    severity: str = "warn"
    step: int | None = None  # the step being trained then, when the metrics have times


@dataclass
class Series:
    """The points of one chart."""

    title: str
    key_metric: str | None
    device: str
    steps: list[int] = field(default_factory=list)  # x of the loss / key metric points
    loss: list[float | None] = field(default_factory=list)
    key: list[float | None] = field(default_factory=list)
    util_t: list[float] = field(default_factory=list)  # seconds since the start
    util: dict[str, list[float | None]] = field(default_factory=dict)  # "GPU 0" / "CPU"
    markers: list[Marker] = field(default_factory=list)
    start: float = 0.0  # wall-clock zero of the time axis


def describe(
    *,
    run_id: str,
    name: str,
    status: str,
    run_dir: str,
    key_metric: str | None,
    device: str,
    started_at: float | None,
    incidents: Sequence[tuple[float, str, str]],
) -> dict[str, Any]:
    """The renderer's input for one run; ``incidents`` as ``(ts, rule, severity)``."""
    shown = sorted(incidents)[-_MAX_INCIDENTS:]
    return {
        "run_id": run_id,
        "name": name,
        "status": status,
        "run_dir": run_dir,
        "key_metric": key_metric,
        "device": device,
        "started_at": started_at,
        "incidents": [{"t": t, "rule": rule, "severity": sev} for t, rule, sev in shown],
    }


def describe_run(run: Run, incidents: Sequence[tuple[float, str, str]]) -> dict[str, Any]:
    """:func:`describe` for a run's row (the daemon's charts and ``harness plot``)."""
    spec = run.spec or {}
    progress = run.progress or {}
    return describe(
        run_id=run.id,
        name=run.name,
        status=run.status,
        run_dir=run.run_dir or "",
        key_metric=key_metric_of(spec),
        device=str(progress.get("device") or spec.get("device") or ""),
        started_at=run.started_at,
        incidents=incidents,
    )


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a regular file, opened safely; nothing for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return
        for line in f:
            if len(line) <= _MAX_LINE and line.strip():
                yield line


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, parsed ``_BATCH`` lines per ``json.loads``."""
    batch: list[bytes] = []
    for line in _lines(path):
        batch.append(line)
        if len(batch) == _BATCH:
            yield from _parse(batch)
            batch = []
    yield from _parse(batch)


def _parse(batch: list[bytes]) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    try:
        values = json.loads(b"[" + b",".join(batch) + b"]")
        if len(values) != len(batch):
            raise ValueError("a line held more than one value")
    except (ValueError, RecursionError):
        values = []
        for line in batch:
            try:
                values.append(json.loads(line))
            except (ValueError, RecursionError):
                continue
    for value in values:
        if isinstance(value, dict):
            yield value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _step(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**53) < value < 2**53 else None


def load_series(desc: Mapping[str, Any], *, max_points: int = MAX_POINTS) -> Series:
    """Read the run dir named in ``desc`` into a :class:`Series` (see the module doc)."""
    run_dir = Path(str(desc.get("run_dir") or "."))
    key_metric = desc.get("key_metric") if isinstance(desc.get("key_metric"), str) else None
    if key_metric == "loss":
        key_metric = None  # already the upper panel's main line
    name, run_id = str(desc.get("name") or "run"), str(desc.get("run_id") or "")
    status = str(desc.get("status") or "")
    title = f"{name} · {run_id}" + (f" · {status}" if status else "")
    series = Series(title=title, key_metric=key_metric, device=str(desc.get("device") or ""))
    points = _Thin(max_points)
    stamps = _Thin(max_points)  # (t, step) for placing the markers on the step axis
    for rec in _records(run_dir / METRICS_FILE):
        step = _step(rec.get("step"))
        if step is None or rec.get("event") is not None:
            continue
        loss = _number(rec.get("loss"))
        key = _number(rec.get(key_metric)) if key_metric else None
        if loss is not None or key is not None:
            points.add((step, loss, key))
        t = _number(rec.get("t"))
        if t is not None:
            stamps.add((t, step))
    for step, loss, key in points.result():
        series.steps.append(step)
        series.loss.append(loss)
        series.key.append(key)
    times: list[tuple[float, int]] = stamps.result()
    _load_util(series, run_dir / UTIL_FILE, max_points)
    started = _number(desc.get("started_at"))
    firsts = [x for x in (series.start or None, times[0][0] if times else None, started) if x]
    series.start = min(firsts) if firsts else 0.0
    if series.util_t:
        series.util_t = [t - series.start for t in series.util_t]
    for inc in desc.get("incidents") or []:
        if not isinstance(inc, Mapping) or (t := _number(inc.get("t"))) is None:
            continue
        rule = str(inc.get("rule") or "?")[:40]
        series.markers.append(
            Marker(t - series.start, rule, str(inc.get("severity") or "warn"), _step_at(times, t))
        )
    return series


def _load_util(series: Series, path: Path, max_points: int) -> None:
    thin = _Thin(max_points)
    for rec in _records(path):
        t = _number(rec.get("t"))
        if t is not None:
            thin.add(rec)
    rows = thin.result()
    if not rows:
        return
    gpu_names = sorted(
        {k for r in rows if isinstance(r.get("gpu"), dict) for k in r["gpu"]},
        key=lambda k: (len(k), k),
    )
    if gpu_names or series.device.startswith("cuda"):
        for k in gpu_names:
            series.util[f"GPU {k}"] = [
                _number(r["gpu"].get(k)) if isinstance(r.get("gpu"), dict) else None for r in rows
            ]
    if not series.util:
        series.util["CPU"] = [_number(r.get("cpu")) for r in rows]
    series.util_t = [float(r["t"]) for r in rows]
    series.start = series.util_t[0]


def _step_at(times: list[tuple[float, int]], t: float) -> int | None:
    """The last step logged at or before wall-clock ``t`` (None before the first)."""
    best = None
    for when, step in times:
        if when > t:
            break
        best = step
    return best
