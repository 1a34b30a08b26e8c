"""Files attached to outbox messages (a chart PNG), kept in the same SQLite file.

A side table, ``outbox_file``, holds one row per file: the message it belongs to, its
position (the ``id`` of its entry in the payload's ``attachments``, hence the multipart
part ``files[<position>]``), its name, content type, size and bytes. It is written in the
same transaction as the message (``store_prepared``), so a message is never visible
without its files. An existing database gains the table when it is opened (SQLModel's
``create_all`` creates missing tables and touches no existing row).

Once a message is ``sent`` its files' bytes are dropped (name and size stay): Discord
has them, and a heartbeat chart every five minutes would otherwise grow the database by
tens of megabytes a day. A dead or pending message keeps them, so ``harness messages
retry`` sends the chart too.

Limits (Discord's): at most :data:`MAX_FILES` files per message; each at most
:data:`MAX_FILE_BYTES` and together at most :data:`MAX_TOTAL_BYTES`; a name of 1-100
characters from ``[A-Za-z0-9._-]``, unique within the message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, Session, SQLModel, col, select, update

from ._errors import InvalidMessageError, UnreadableMessageError

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "Attachment",
    "OutboxFile",
    "check_files",
    "drop_sent_bytes",
    "file_summaries",
    "insert_files",
    "load_files",
]

MAX_FILES = 10
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_TOTAL_BYTES = 8 * 1024 * 1024
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")


@dataclass(frozen=True)
class Attachment:
    """One file to upload with a message."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"

    def __repr__(self) -> str:  # never the bytes
        return f"Attachment({self.filename!r}, {len(self.data)} bytes, {self.content_type!r})"


class OutboxFile(SQLModel, table=True):
    """A file of an outbox message; ``data`` is None once the message was sent."""

    __tablename__ = "outbox_file"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(index=True)
    position: int = 0
    filename: str
    content_type: str
    size: int
    data: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


def check_files(files: Any) -> list[Attachment]:
    """The files as a list, or :class:`InvalidMessageError` naming the first problem."""
    if files is None:
        return []
    if not isinstance(files, list | tuple):
        raise InvalidMessageError("files must be a list")
    if len(files) > MAX_FILES:
        raise InvalidMessageError(f"at most {MAX_FILES} files per message, got {len(files)}")
    out: list[Attachment] = []
    seen: set[str] = set()
    total = 0
    for i, f in enumerate(files):
        where = f"files[{i}]"
        if not isinstance(f, Attachment):
            raise InvalidMessageError(f"{where} is not a file")
        if not isinstance(f.filename, str) or not _NAME_RE.fullmatch(f.filename):
            raise InvalidMessageError(
                f"{where}.filename must be 1-100 characters of letters, digits, '.', '_', '-'"
            )
        if f.filename in seen:
            raise InvalidMessageError(f"{where}.filename {f.filename!r} is used twice")
        if not isinstance(f.content_type, str) or not _TYPE_RE.fullmatch(f.content_type):
            raise InvalidMessageError(f"{where}.content_type must be a MIME type like image/png")
        if not isinstance(f.data, bytes) or not f.data:
            raise InvalidMessageError(f"{where} is empty")
        if len(f.data) > MAX_FILE_BYTES:
            raise InvalidMessageError(
                f"{where} is {len(f.data)} bytes (limit {MAX_FILE_BYTES} per file)"
            )
        total += len(f.data)
        if total > MAX_TOTAL_BYTES:
            raise InvalidMessageError(f"the files add up to more than {MAX_TOTAL_BYTES} bytes")
        seen.add(f.filename)
        out.append(f)
    return out


_INSERT = (
    "INSERT INTO outbox_file (message_id, position, filename, content_type, size, data) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def insert_files(*, session: Session, rows: Sequence[tuple[int, Sequence[Attachment]]]) -> None:
    """Store ``(message id, files)`` pairs; part of the caller's transaction."""
    values = [
        (message_id, position, f.filename, f.content_type, len(f.data), f.data)
        for message_id, files in rows
        for position, f in enumerate(files)
    ]
    if values:
        session.connection().exec_driver_sql(_INSERT, values)


def load_files(*, session: Session, message_id: int, payload: dict[str, Any]) -> list[Attachment]:
    """The files that the payload's ``attachments`` name, in order, bytes and all.

    Raises :class:`UnreadableMessageError` when one is missing or its bytes are gone, so
    the worker dead-letters the message rather than posting it without its file.
    """
    wanted = payload.get("attachments")
    if not wanted:
        return []
    q = (
        select(OutboxFile)
        .where(col(OutboxFile.message_id) == message_id)
        .order_by(col(OutboxFile.position))
    )
    by_position = {f.position: f for f in session.exec(q).all()}
    out = []
    for entry in wanted if isinstance(wanted, list) else []:
        position = entry.get("id") if isinstance(entry, dict) else None
        row = by_position.get(position) if isinstance(position, int) else None
        if row is None or row.data is None or len(row.data) != row.size:
            raise UnreadableMessageError(
                f"outbox message {message_id}: attachment {position!r} is missing from the "
                "database",
                message_id=message_id,
            )
        out.append(Attachment(row.filename, bytes(row.data), row.content_type))
    return out


def drop_sent_bytes(*, session: Session, message_id: int) -> None:
    """Forget the bytes of a sent message's files (name, type and size stay)."""
    session.exec(
        update(OutboxFile).where(col(OutboxFile.message_id) == message_id).values(data=None)
    )


def file_summaries(*, session: Session, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """``{message id: [{"filename", "content_type", "size", "kept"}]}``; no bytes read."""
    if not ids:
        return {}
    wanted = list(dict.fromkeys(int(i) for i in ids))
    marks = ", ".join("?" for _ in wanted)
    rows = session.connection().exec_driver_sql(
        "SELECT message_id, filename, content_type, size, data IS NOT NULL FROM outbox_file "
        f"WHERE message_id IN ({marks}) ORDER BY message_id, position",
        tuple(wanted),
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for message_id, name, ctype, size, kept in rows:
        out.setdefault(int(message_id), []).append(
            {"filename": name, "content_type": ctype, "size": int(size), "kept": bool(kept)}
        )
    return out
