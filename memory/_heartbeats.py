"""Heartbeats as sent: when, how healthy, and what they said."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, select

from ._text import clean_text

__all__ = ["Heartbeat", "last_heartbeat", "record_heartbeat"]


class Heartbeat(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    ts: float = Field(default_factory=time.time, index=True)
    health: str = "ok"  # ok | warn | bad | idle
    text: str = ""
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def record_heartbeat(
    *, session: Session, text: str, health: str, payload: dict[str, Any], ts: float | None = None
) -> Heartbeat:
    """Store a heartbeat as sent; its text is built from job output, so it is cleaned."""
    row = Heartbeat(
        ts=time.time() if ts is None else ts, text=clean_text(text), health=health, payload=payload
    )
    session.add(row)
    session.flush()
    return row


def last_heartbeat(*, session: Session) -> Heartbeat | None:
    return session.exec(select(Heartbeat).order_by(col(Heartbeat.id).desc())).first()
