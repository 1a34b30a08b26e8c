"""Incidents: what went wrong (or was prevented), in which run, by which rule, with numbers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from memory import InvalidTextError, check_text, clean_text

from ._errors import InvalidInputError, NotFoundError
from ._log import normalise_id
from ._models import Incident, Mistake

__all__ = ["SEVERITIES", "get_incident", "list_incidents", "record_incident", "resolve_incident"]

SEVERITIES = ("info", "warn", "abort", "error")


def record_incident(
    *,
    session: Session,
    rule: str,
    summary: str,
    run_id: str | None = None,
    mistake_id: str | None = None,
    severity: str = "warn",
    evidence: Mapping[str, Any] | None = None,
    action: str = "",
    ts: float | None = None,
) -> Incident:
    """Store one incident. A mistake id must name a catalogued mistake.

    The summary and the action are built from job output, so they are cleaned (a lone
    surrogate becomes U+FFFD) rather than refused: an incident is never lost to them.
    """
    if severity not in SEVERITIES:
        raise InvalidInputError(
            f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}"
        )
    if not summary.strip():
        raise InvalidInputError("an incident needs a summary")
    mid = normalise_id(mistake_id) if mistake_id else None
    if (
        mid is not None
        and session.exec(select(Mistake.key).where(Mistake.id == mid)).first() is None
    ):
        raise InvalidInputError(f"incident links to {mid}, which is not in the mistake log")
    row = Incident(
        ts=time.time() if ts is None else ts,
        run_id=None if run_id is None else clean_text(run_id),
        rule=clean_text(rule),
        mistake_id=mid,
        severity=severity,
        summary=clean_text(summary),
        evidence=dict(evidence or {}),
        action=clean_text(action),
    )
    session.add(row)
    session.flush()
    return row


def list_incidents(
    *,
    session: Session,
    run_id: str | None = None,
    rule: str | None = None,
    mistake_id: str | None = None,
    since: float | None = None,
    unresolved: bool = False,
    limit: int | None = None,
) -> list[Incident]:
    """Newest first, filtered by any combination of run, rule, mistake, time, state."""
    q = select(Incident)
    if run_id is not None:
        q = q.where(Incident.run_id == run_id)
    if rule is not None:
        q = q.where(Incident.rule == rule)
    if mistake_id is not None:
        q = q.where(Incident.mistake_id == normalise_id(mistake_id))
    if since is not None:
        q = q.where(Incident.ts >= since)
    if unresolved:
        q = q.where(col(Incident.resolved).is_(False))
    q = q.order_by(col(Incident.ts).desc(), col(Incident.id).desc())
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q).all())


def get_incident(*, session: Session, incident_id: int) -> Incident:
    row = session.get(Incident, incident_id)
    if row is None:
        raise NotFoundError(f"no incident {incident_id} (see `harness incidents`)")
    return row


def resolve_incident(*, session: Session, incident_id: int, note: str) -> Incident:
    if not note.strip():
        raise InvalidInputError("resolving an incident needs a note saying what was done")
    try:
        check_text(note, "the note")
    except InvalidTextError as exc:
        raise InvalidInputError(str(exc)) from None
    row = get_incident(session=session, incident_id=incident_id)
    row.resolved = True
    row.resolved_at = time.time()
    row.resolution_note = note.strip()
    session.add(row)
    return row
