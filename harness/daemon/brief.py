"""The briefing (DESIGN section 9): what to know before touching anything.

``harness brief`` is what a person, or a coding agent that has just lost its context,
reads first. :func:`build_brief` gathers it from the store and the pre-launch checklist;
the renderers turn it into text (most urgent first: standing orders, failing checks, unread
inbox, the conduct items of the checklist), JSON, or the envelope a coding agent's
SessionStart hook injects. The conduct items are those no machine can check (which copy
of the repo to edit, what to re-read after a compaction): an agent that lost its context
reads them again here.

"Incidents since the last brief": the time of the last brief is kept in the ``marker``
table (:func:`memory.set_marker`, name ``brief``). ``build_brief(mark=True)`` moves it to
``now``; incidents are counted in ``[previous mark, now)``, so one recorded while a brief
is being built shows in the next brief instead of being lost. The first brief, with no
mark yet, looks back :data:`FIRST_BRIEF_LOOKBACK_S`.

The brief never marks inbox notes read: only ``harness inbox`` (or ``GET /inbox``) does,
so a note from a person keeps showing until someone actually reads it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mistakes as ml
from harness.core.format import duration
from harness.core.heartbeat import run_summary
from harness.core.spec import RunSpec
from harness.runtime.preflight import CheckItem, default_check_spec, preflight_checks
from memory import (
    TERMINAL,
    Heartbeat,
    Note,
    Run,
    Store,
    get_marker,
    json_safe,
    last_heartbeat,
    list_notes,
    list_runs,
    one_line,
    set_marker,
    unread_inbox,
)

__all__ = [
    "BRIEF_MARKER",
    "FIRST_BRIEF_LOOKBACK_S",
    "Brief",
    "RunLine",
    "brief_sections",
    "build_brief",
    "default_check_spec",
    "render_hook",
    "render_json",
    "render_text",
]

BRIEF_MARKER = "brief"
FIRST_BRIEF_LOOKBACK_S = 24 * 3600.0
MAX_INCIDENTS = 50  # kept in the brief; the text shows fewer
TEXT_INCIDENTS = 15
RECENT_RUNS = 5
RECENT_NOTES = 5


@dataclass(frozen=True)
class RunLine:
    """An active run with its one-line summary (the heartbeat's line)."""

    run: Run
    health: str  # ok | warn | bad
    line: str
    incidents: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.run.id,
            "name": self.run.name,
            "status": self.run.status,
            "health": self.health,
            "line": self.line,
            "incidents": self.incidents,
            "progress": self.run.progress,
            "progress_at": self.run.progress_at,
            "started_at": self.run.started_at,
        }


@dataclass(frozen=True)
class Brief:
    generated_at: float
    previous_brief_at: float | None  # None on the very first brief
    incidents_since: float  # incidents are those with ts in [incidents_since, generated_at)
    standing_orders: list[Note]
    conduct: list[ml.ChecklistItem]  # checklist items only a person or agent can keep
    failing_checks: list[CheckItem]
    inbox: list[Note]  # unread, oldest first
    active_runs: list[RunLine]
    last_heartbeat: Heartbeat | None
    incidents: list[ml.Incident]  # newest first, at most MAX_INCIDENTS
    incident_count: int  # all of them, even beyond MAX_INCIDENTS
    recent_runs: list[Run]  # finished runs, newest first
    notes: list[Note]  # the latest terminal notes, oldest first


def _failing_checks(store: Store, spec: RunSpec, now: float) -> list[CheckItem]:
    with tempfile.TemporaryDirectory(prefix="harness-brief-") as tmp:
        items = preflight_checks(
            spec, run_dir=Path(tmp), run_id=f"brief-{int(now)}", store=store, clean=False
        )
    return [i for i in items if not i.passed]


def build_brief(
    store: Store, *, now: float | None = None, mark: bool = True, spec: RunSpec | None = None
) -> Brief:
    """Gather the briefing. ``mark`` moves the "last brief" time to ``now``.

    ``spec`` is the spec whose pre-launch checks are run (stale processes, RAM headroom);
    the default is :func:`default_check_spec`, the same as a bare ``harness check``.
    """
    now = time.time() if now is None else now
    failing = _failing_checks(store, spec or default_check_spec(), now)
    with store.read() as s:
        previous = get_marker(session=s, name=BRIEF_MARKER)
        since = previous if previous is not None else now - FIRST_BRIEF_LOOKBACK_S
        incidents = [
            i for i in ml.list_incidents(session=s, since=since) if i.ts < now
        ]  # newest first
        active: list[RunLine] = []
        for run in list_runs(session=s, limit=1000, active_only=True):
            count = len(ml.list_incidents(session=s, run_id=run.id))
            health, line = run_summary(run, incidents=count, now=now)
            active.append(RunLine(run, health, line, count))
        finished = [r for r in list_runs(session=s, limit=200) if r.status in TERMINAL]
        brief = Brief(
            generated_at=now,
            previous_brief_at=previous,
            incidents_since=since,
            standing_orders=list_notes(session=s, kind="order", limit=None),
            conduct=[v.item for v in ml.checklist(session=s) if v.enforcement == "conduct"],
            failing_checks=failing,
            inbox=unread_inbox(session=s),
            active_runs=active,
            last_heartbeat=last_heartbeat(session=s),
            incidents=incidents[:MAX_INCIDENTS],
            incident_count=len(incidents),
            recent_runs=finished[:RECENT_RUNS],
            notes=list_notes(session=s, kind="note", limit=RECENT_NOTES),
        )
    if mark:
        with store.write() as s:
            set_marker(session=s, name=BRIEF_MARKER, ts=now)
    return brief


# -- rendering ---------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _ago(ts: float, now: float) -> str:
    return f"{duration(max(now - ts, 0.0))} ago"


def _check_line(item: CheckItem) -> str:
    ids = f" ({', '.join(item.mistake_ids)})" if item.mistake_ids else ""
    return f"FAIL {item.name}{ids}: {item.evidence}"


def _conduct_line(item: ml.ChecklistItem) -> str:
    ids = f" ({', '.join(item.mistake_ids)})" if item.mistake_ids else ""
    return one_line(f"{item.title}{ids}: {item.text}" if item.text else item.title + ids, 300)


def _incident_line(i: ml.Incident) -> str:
    mid = f" {i.mistake_id}" if i.mistake_id else ""
    state = "resolved" if i.resolved else i.severity
    return one_line(f"#{i.id} {_when(i.ts)} {i.run_id or '-'} {i.rule}{mid} [{state}]: {i.summary}")


def _finished_line(run: Run) -> str:
    took = duration((run.ended_at or 0) - run.started_at) if run.started_at else "-"
    ended = _when(run.ended_at or run.created_at)
    return one_line(f"{run.id} {run.status} ({took}, ended {ended}): {run.summary or '-'}")


def brief_sections(brief: Brief) -> dict[str, list[str]]:
    """Section title -> lines, most urgent first (the text, the bot's embed fields)."""
    now = brief.generated_at
    orders = [f"#{n.id} {one_line(n.text, 1000)}" for n in brief.standing_orders]
    checks = [_check_line(i) for i in brief.failing_checks]
    conduct = [_conduct_line(i) for i in brief.conduct]
    inbox = [
        f"#{n.id} {_when(n.ts)} from {n.author}: {one_line(n.text, 1000)}" for n in brief.inbox
    ]
    if inbox:
        inbox.append("(read and acknowledge with `harness inbox`)")
    runs = [f"{r.run.name} [{r.run.id}] {r.run.status}: {r.line}" for r in brief.active_runs]
    hb = brief.last_heartbeat
    if hb is not None:
        first = hb.text.splitlines()[0] if hb.text else ""
        runs.append(
            one_line(f"last heartbeat {_when(hb.ts)} ({_ago(hb.ts, now)}) [{hb.health}] {first}")
        )
    elif brief.active_runs:
        runs.append("no heartbeat recorded yet")
    incidents = [_incident_line(i) for i in brief.incidents[:TEXT_INCIDENTS]]
    if brief.incident_count > len(incidents):
        more = brief.incident_count - len(incidents)
        incidents.append(
            f"… and {more} more (harness incidents --since {_when(brief.incidents_since)!r})"
        )
    return {
        "Standing orders": orders or ["none"],
        "Failing checks": checks or ["none: stale processes and RAM headroom pass"],
        "Unread inbox": inbox or ["none"],
        "Conduct, yours to keep": conduct or ["none"],
        "Active runs": runs or ["none"],
        "Incidents since the last brief": incidents or ["none"],
        "Recent runs": [_finished_line(r) for r in brief.recent_runs] or ["none"],
        "Notes": [f"#{n.id} {_when(n.ts)} {one_line(n.text, 1000)}" for n in brief.notes]
        or ["none"],
    }


def _counts(brief: Brief) -> dict[str, int]:
    return {
        "Standing orders": len(brief.standing_orders),
        "Failing checks": len(brief.failing_checks),
        "Unread inbox": len(brief.inbox),
        "Conduct, yours to keep": len(brief.conduct),
        "Active runs": len(brief.active_runs),
        "Incidents since the last brief": brief.incident_count,
        "Recent runs": len(brief.recent_runs),
        "Notes": len(brief.notes),
    }


def render_text(brief: Brief) -> str:
    since = (
        f"last brief {_when(brief.previous_brief_at)}"
        if brief.previous_brief_at is not None
        else "first brief"
    )
    out = [f"Harness brief {_when(brief.generated_at)} ({since})"]
    counts = _counts(brief)
    for title, lines in brief_sections(brief).items():
        out.append("")
        out.append(f"== {title} ({counts[title]}) ==")
        out.extend(f"  {line}" for line in lines)
    return "\n".join(out) + "\n"


def render_json(brief: Brief) -> dict[str, Any]:
    """The brief as strict-JSON-ready data: a non-finite number (a NaN loss in a
    progress snapshot) is kept as its text (``"nan"``), text is cleaned."""
    hb = brief.last_heartbeat
    data: dict[str, Any] = json_safe(
        {
            "generated_at": brief.generated_at,
            "previous_brief_at": brief.previous_brief_at,
            "incidents_since": brief.incidents_since,
            "standing_orders": [n.model_dump() for n in brief.standing_orders],
            "conduct": [i.as_dict() for i in brief.conduct],
            "failing_checks": [
                {
                    "name": i.name,
                    "passed": i.passed,
                    "evidence": i.evidence,
                    "rule": i.rule,
                    "mistake_ids": list(i.mistake_ids),
                }
                for i in brief.failing_checks
            ],
            "inbox": [n.model_dump() for n in brief.inbox],
            "active_runs": [r.as_dict() for r in brief.active_runs],
            "last_heartbeat": None
            if hb is None
            else {"id": hb.id, "ts": hb.ts, "health": hb.health, "text": hb.text},
            "incidents": [i.model_dump() for i in brief.incidents],
            "incident_count": brief.incident_count,
            "recent_runs": [r.model_dump() for r in brief.recent_runs],
            "notes": [n.model_dump() for n in brief.notes],
        },
        nonfinite="text",
    )
    return data


def render_hook(brief: Brief) -> dict[str, Any]:
    """The JSON a SessionStart hook prints so the agent starts with the brief in context."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "SessionStart",
            "additionalContext": render_text(brief),
        }
    }
