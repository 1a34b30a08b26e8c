"""The heartbeat summary (DESIGN section 7), as plain text and as a Discord embed.

Pure: it takes the runs, the incidents since the previous heartbeat, the machine's free
RAM and the time, and returns what to store, print and send. The scheduler that calls it lives
in ``harness.daemon.service``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.core.format import duration, gb, key_metric_of, progress_parts
from memory import Run, clip
from mistakes import Incident

__all__ = ["COLOURS", "HeartbeatView", "build_heartbeat", "run_summary"]

COLOURS = {"ok": 0x2ECC71, "warn": 0xF1C40F, "bad": 0xE74C3C, "idle": 0x95A5A6}
STALE_PROGRESS_S = 60.0  # a run whose supervisor has not written progress for this long


@dataclass(frozen=True)
class HeartbeatView:
    health: str  # ok | warn | bad | idle
    text: str  # what the terminal prints and `harness messages` shows
    embed: dict[str, Any]  # Discord embed, within its limits
    payload: dict[str, Any]  # structured copy stored with the heartbeat


def run_summary(run: Run, *, incidents: int = 0, now: float) -> tuple[str, str]:
    """(health, one line) for an active run at wall-clock time ``now``."""
    p = run.progress or {}
    parts = progress_parts(p, key_metric_of(run.spec or {}))
    if p.get("step") is None and not p.get("queued"):
        parts.insert(0, run.status)
    parts.append(f"incidents {incidents}")
    attempts = p.get("attempts") or []
    if attempts:  # rollbacks: the run is on its attempts + 1'th start
        parts.append(
            f"rolled back {len(attempts)}x (last to step {attempts[-1].get('checkpoint_step')})"
        )
    found = [d for d in p.get("diagnosis") or [] if isinstance(d, str)]
    if found:  # the live diagnosis: the latest finding, and how many there are
        more = f" (+{len(found) - 1} more: harness diagnose {run.id})" if len(found) > 1 else ""
        parts.append(f"⚠ {clip(found[-1], 160)}{more}")
    health = "ok"
    if run.status == "aborting":
        health = "bad"
    elif incidents or found:
        health = "warn"
    age = now - run.progress_at if run.progress_at else None
    if run.status == "running" and (age is None or age > STALE_PROGRESS_S):
        started = run.started_at or run.created_at
        if now - started > STALE_PROGRESS_S:
            shown = f"{age:.0f} s" if age is not None else "ever"
            parts.append(f"⚠ no progress update for {shown}")
            health = "bad"
    return health, " · ".join(parts)


def build_heartbeat(
    *,
    runs: Sequence[Run],
    incidents: Sequence[Incident],
    ram_available: int | None,
    host: str,
    now: float,
    interval_s: float = 300.0,
) -> HeartbeatView:
    stamp = datetime.fromtimestamp(now, UTC)
    by_run: dict[str | None, int] = {}
    for inc in incidents:
        by_run[inc.run_id] = by_run.get(inc.run_id, 0) + 1
    lines: list[str] = []
    fields: list[dict[str, Any]] = []
    healths: list[str] = []
    for run in runs:
        health, line = run_summary(run, incidents=by_run.get(run.id, 0), now=now)
        healths.append(health)
        lines.append(f"{run.name} [{run.id}] {line}")
        fields.append(
            {"name": f"{run.name} · {run.id}"[:256], "value": line[:1024], "inline": False}
        )
    severe = any(i.severity in ("abort", "error") for i in incidents)
    if not runs:
        health = "bad" if severe else ("warn" if incidents else "idle")
        lines.append(f"idle: no active runs · RAM free {gb(ram_available)}")
    elif "bad" in healths or severe:
        health = "bad"
    elif "warn" in healths or incidents:
        health = "warn"
    else:
        health = "ok"
    if incidents:
        lines.append(f"{len(incidents)} incident(s) since the last heartbeat:")
        for inc in list(incidents)[:5]:
            mid = f" {inc.mistake_id}" if inc.mistake_id else ""
            lines.append(f"  #{inc.id} {inc.run_id or '-'} {inc.rule}{mid}: {inc.summary}"[:300])
        if len(incidents) > 5:
            lines.append(f"  … and {len(incidents) - 5} more (harness incidents)")
    text = f"heartbeat {stamp:%H:%M:%S}Z on {host} [{health}]\n" + "\n".join(lines)
    description = (
        f"idle: no active runs · RAM free {gb(ram_available)}"
        if not runs
        else f"{len(runs)} active run(s) · RAM free {gb(ram_available)}"
    )
    if incidents:
        description += "\n" + "\n".join(lines[-min(len(incidents), 5) - 1 :])
    embed = {
        "title": f"Harness heartbeat · {host}"[:256],
        "description": description[:4096],
        "color": COLOURS[health],
        "fields": fields[:25],
        "footer": {"text": f"every {duration(interval_s)} · {health}"},
        "timestamp": stamp.isoformat(),
    }
    payload = {
        "health": health,
        "runs": [{"id": r.id, "name": r.name, "status": r.status} for r in runs],
        "incidents": [i.id for i in incidents],
        "ram_available": ram_available,
    }
    return HeartbeatView(health, text, embed, payload)
