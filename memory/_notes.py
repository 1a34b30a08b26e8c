"""Notes, standing orders and the inbox: what people and agents leave for each other.

One table, :class:`Note`, distinguished by ``kind``:

- ``note``: something whoever works at the terminal wrote down for later (``harness note``);
- ``order``: a standing order, shown at the top of every briefing until removed;
- ``inbox``: a message from a person on Discord (``/tell``), unread until ``harness inbox``
  shows it (``read_at`` is then set).

Removing is a soft delete (``removed_at``), so the history stays queryable.

:class:`Marker` is a tiny name -> time table for "when did X last happen"; the briefing
keeps the time of the last brief there (name ``brief``) to show only newer incidents.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlmodel import Field, Session, SQLModel, col, select

from ._text import check_text

__all__ = [
    "MAX_NOTE_CHARS",
    "NOTE_KINDS",
    "Marker",
    "Note",
    "NoteNotFoundError",
    "add_note",
    "get_marker",
    "list_notes",
    "mark_read",
    "remove_note",
    "set_marker",
    "unread_inbox",
]

NOTE_KINDS = ("note", "order", "inbox")
MAX_NOTE_CHARS = 4000
_KIND_WORD = {"note": "note", "order": "standing order", "inbox": "inbox note"}


class NoteNotFoundError(LookupError):
    """No (live) note with that id and kind; the message says which id was asked for."""


class Note(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    ts: float = Field(default_factory=time.time, index=True)
    kind: str = Field(default="note", index=True)  # note | order | inbox
    text: str
    author: str = "terminal"
    read_at: float | None = None
    removed_at: float | None = None


class Marker(SQLModel, table=True):
    """When something last happened, by name (e.g. ``brief``)."""

    name: str = Field(primary_key=True)
    ts: float


def _check_kind(kind: str) -> str:
    if kind not in NOTE_KINDS:
        raise ValueError(f"note kind must be one of {', '.join(NOTE_KINDS)}, got {kind!r}")
    return kind


def add_note(
    *,
    session: Session,
    text: str,
    kind: str = "note",
    author: str = "terminal",
    ts: float | None = None,
) -> Note:
    """Store a note; empty or over-long text raises ValueError with a one-line message.

    Text (or an author) that is not valid Unicode (a lone surrogate) is refused with
    :class:`memory.InvalidTextError`, a ValueError naming the kind of note.
    """
    _check_kind(kind)
    check_text(text, f"the {_KIND_WORD[kind]}")
    check_text(author, f"the author of the {_KIND_WORD[kind]}")
    text = text.strip()
    if not text:
        raise ValueError(f"a {_KIND_WORD[kind]} needs some text")
    if len(text) > MAX_NOTE_CHARS:
        raise ValueError(
            f"a {_KIND_WORD[kind]} is limited to {MAX_NOTE_CHARS} characters, got {len(text)}"
        )
    row = Note(
        ts=time.time() if ts is None else ts,
        kind=kind,
        text=text,
        author=author.strip() or "terminal",
    )
    session.add(row)
    session.flush()
    return row


def list_notes(
    *,
    session: Session,
    kind: str | None = None,
    unread_only: bool = False,
    include_removed: bool = False,
    limit: int | None = 100,
) -> list[Note]:
    """Oldest first (the order they were written in); the newest ``limit`` of them."""
    q = select(Note)
    if kind is not None:
        q = q.where(Note.kind == _check_kind(kind))
    if unread_only:
        q = q.where(col(Note.read_at).is_(None))
    if not include_removed:
        q = q.where(col(Note.removed_at).is_(None))
    q = q.order_by(col(Note.ts).desc(), col(Note.id).desc())
    if limit is not None:
        q = q.limit(limit)
    return list(reversed(session.exec(q).all()))


def mark_read(*, session: Session, ids: Iterable[int], now: float | None = None) -> int:
    """Set ``read_at`` on the given notes that are still unread; returns how many."""
    wanted = list(ids)
    if not wanted:
        return 0
    stamp = time.time() if now is None else now
    rows = session.exec(
        select(Note).where(col(Note.id).in_(wanted)).where(col(Note.read_at).is_(None))
    ).all()
    for row in rows:
        row.read_at = stamp
        session.add(row)
    return len(rows)


def remove_note(
    *, session: Session, note_id: int, kind: str | None = None, now: float | None = None
) -> Note:
    """Soft-delete a note (of ``kind``, when given); unknown or removed ids raise."""
    row = session.get(Note, note_id)
    word = _KIND_WORD[_check_kind(kind)] if kind is not None else "note"
    if row is None or row.removed_at is not None or (kind is not None and row.kind != kind):
        listing = "orders list" if kind == "order" else "notes"
        raise NoteNotFoundError(f"no {word} #{note_id} (see `harness {listing}`)")
    row.removed_at = time.time() if now is None else now
    session.add(row)
    return row


def unread_inbox(*, session: Session) -> list[Note]:
    """Inbox notes nobody has read yet, oldest first (not marked read here)."""
    return list_notes(session=session, kind="inbox", unread_only=True, limit=None)


def get_marker(*, session: Session, name: str) -> float | None:
    row = session.get(Marker, name)
    return None if row is None else row.ts


def set_marker(*, session: Session, name: str, ts: float) -> None:
    row = session.get(Marker, name)
    if row is None:
        session.add(Marker(name=name, ts=ts))
    else:
        row.ts = ts
        session.add(row)
