"""The durable outbox: every outbound Discord message is a row before anyone is told "sent".

States: ``pending -> sending -> sent | dead`` (``sending -> pending`` again on a retry
or when :func:`reset_stuck` runs at start-up). Delivery is FIFO by ``id`` with
head-of-line blocking: :func:`claim_next` only ever looks at the oldest message that is
still ``pending`` or ``sending``; if that one is not due yet (or is in flight), nothing
is claimed, so a later message can never overtake an earlier one. A ``dead`` message
does not block, and neither does a row whose payload cannot be read back:
:func:`claim_next` refuses it with :class:`UnreadableMessageError` so the worker can
dead-letter it. People move rows by hand with :func:`retry_messages` (dead -> pending)
and :func:`drop_messages` (pending or dead -> dead).

Error text stored in ``last_error`` is cleaned of lone surrogates first: SQLite refuses
such text, and a row that cannot be updated would block the queue for ever.

A message may carry files (a chart PNG): they live in the ``outbox_file`` side table
(see ``_files``), written in the same transaction as their row, and go with the one row
of a split message whose payload has ``attachments``.

``nonce`` is derived from the row id and a random salt stored once per database, so a
resend of the same row carries the same nonce (Discord's ``enforce_nonce`` turns that
into exactly-once for channel messages) while a fresh database never reuses the nonce
of an old one. All functions take a session as a keyword and do not commit: use them
inside ``store.write()`` / ``store.read()``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Column, func, update
from sqlmodel import Field, Session, SQLModel, col, select

from memory import clean_text, one_line

from ._errors import (
    InvalidMessageError,
    MessageNotFoundError,
    MessageStateError,
    UnreadableMessageError,
)
from ._files import Attachment, check_files, drop_sent_bytes, insert_files
from ._split import build_payloads

__all__ = [
    "KINDS",
    "STATES",
    "OutboxMessage",
    "Prepared",
    "claim_next",
    "count_by_state",
    "drop_messages",
    "enqueue",
    "has_undelivered",
    "list_messages",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "next_due",
    "prepare",
    "reset_stuck",
    "retry_messages",
    "store_prepared",
]

KINDS = ("text", "embed", "alert", "heartbeat")
STATES = ("pending", "sending", "sent", "dead")
_ACTIVE = ("pending", "sending")
_SALT_KEY = "outbox_nonce_salt"
NONCE_LENGTH = 24  # Discord accepts at most 25 characters


class OutboxMessage(SQLModel, table=True):
    """One Discord message waiting for, in, or done with delivery."""

    __tablename__ = "outbox_message"
    __table_args__ = {"sqlite_autoincrement": True}  # ids, hence nonces, are never reused

    id: int | None = Field(default=None, primary_key=True)
    created_at: float = Field(default_factory=time.time)
    kind: str = "text"
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="pending", index=True)
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    sent_at: float | None = None
    nonce: str | None = None
    discord_message_id: str | None = None


class SidecarMeta(SQLModel, table=True):
    """Small key/value facts about this database that the sidecar needs (the nonce salt)."""

    __tablename__ = "sidecar_meta"

    key: str = Field(primary_key=True)
    value: str


def _salt(session: Session) -> str:
    conn = session.connection()
    value = conn.exec_driver_sql(
        "SELECT value FROM sidecar_meta WHERE key = ?", (_SALT_KEY,)
    ).scalar()
    if value is None:
        value = secrets.token_hex(16)
        conn.exec_driver_sql(
            "INSERT INTO sidecar_meta (key, value) VALUES (?, ?)", (_SALT_KEY, value)
        )
    return str(value)


def _nonce(salt: str, message_id: int) -> str:
    digest = hashlib.blake2s(f"{salt}:{message_id}".encode(), digest_size=16).hexdigest()
    return digest[:NONCE_LENGTH]


Prepared = tuple[str, list[dict[str, Any]], list[Attachment]]


def prepare(
    *,
    text: Any = None,
    embeds: Any = None,
    kind: str | None = None,
    files: Sequence[Attachment] | None = None,
) -> Prepared:
    """Validate and split a message without touching the database: ``(kind, payloads,
    files)``; the files go with the payload that has ``attachments``."""
    if kind is None:
        kind = "embed" if text is None and embeds is not None else "text"
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidMessageError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    checked = check_files(None if files is None else list(files))
    payloads = build_payloads(text, embeds, [f.filename for f in checked])
    return kind, payloads, checked


# Ids are assigned here rather than by SQLite so that each row is written once, nonce
# included. This is safe because the caller holds the write lock (``store.write()`` is
# BEGIN IMMEDIATE); should another writer ever slip in, the primary key refuses the
# duplicate id and the transaction fails instead of mixing rows up. With AUTOINCREMENT,
# sqlite_sequence remembers the highest id ever used, so ids are never reused.
_NEXT_ID = (
    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox_message'), 0), "
    "coalesce((SELECT max(id) FROM outbox_message), 0)) + 1"
)
_INSERT = (
    "INSERT INTO outbox_message (id, created_at, kind, payload, state, attempts, "
    "next_attempt_at, nonce) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
)


def _parts(message: Prepared | tuple[str, list[dict[str, Any]]]) -> Prepared:
    if len(message) == 3:
        return message
    kind, payloads = message
    return kind, payloads, []


def store_prepared(
    *,
    session: Session,
    messages: Sequence[Prepared | tuple[str, list[dict[str, Any]]]],
    now: float | None = None,
) -> list[list[int]]:
    """Insert already prepared messages (see :func:`prepare`); the new ids, per message.

    One ``executemany`` for the whole batch (the HTTP API commits many concurrent
    requests at once this way), and one for their files. Must run inside
    ``store.write()``. A ``(kind, payloads)`` pair is a message without files.
    """
    now = time.time() if now is None else now
    out: list[list[int]] = [[] for _ in messages]
    if not any(message[1] for message in messages):
        return out
    conn = session.connection()
    salt = _salt(session)
    next_id = int(conn.exec_driver_sql(_NEXT_ID).scalar_one())
    rows = []
    files: list[tuple[int, Sequence[Attachment]]] = []
    for index, message in enumerate(messages):
        kind, payloads, attached = _parts(message)
        for payload in payloads:
            body = json.dumps(payload, allow_nan=False)
            rows.append((next_id, now, kind, body, now, _nonce(salt, next_id)))
            if attached and "attachments" in payload:
                files.append((next_id, attached))
            out[index].append(next_id)
            next_id += 1
    conn.exec_driver_sql(_INSERT, rows)
    insert_files(session=session, rows=files)
    return out


def enqueue(
    *,
    session: Session,
    text: str | None = None,
    embeds: list[dict[str, Any]] | None = None,
    kind: str | None = None,
    files: Sequence[Attachment] | None = None,
    now: float | None = None,
) -> list[OutboxMessage]:
    """Queue one message; long text becomes several rows, in order.

    ``kind`` defaults to ``"embed"`` for embeds only, else ``"text"``. ``files`` go with
    one of the rows (see :func:`prepare`), in the same transaction. Raises
    :class:`InvalidMessageError` (nothing stored) when the input is not sendable.
    """
    prepared = prepare(text=text, embeds=embeds, kind=kind, files=files)
    [ids] = store_prepared(session=session, messages=[prepared], now=now)
    q = select(OutboxMessage).where(col(OutboxMessage.id).in_(ids)).order_by(col(OutboxMessage.id))
    return list(session.exec(q).all())


def _head(session: Session) -> tuple[int, str, float] | None:
    """``(id, state, next_attempt_at)`` of the oldest undelivered row; its payload unread."""
    q = (
        select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.next_attempt_at)
        .where(col(OutboxMessage.state).in_(_ACTIVE))
        .order_by(col(OutboxMessage.id))
        .limit(1)
    )
    row = session.exec(q).first()
    return None if row is None else (int(row[0] or 0), str(row[1]), float(row[2]))


def _check_payload(session: Session, message_id: int) -> None:
    """Raise :class:`UnreadableMessageError` unless the stored payload is a JSON object."""
    raw = (
        session.connection()
        .exec_driver_sql("SELECT payload FROM outbox_message WHERE id = ?", (message_id,))
        .scalar()
    )
    try:
        value = json.loads(raw) if isinstance(raw, str | bytes) else None
    except (ValueError, RecursionError) as exc:
        reason = one_line(clean_text(str(exc)), 120)
        raise UnreadableMessageError(
            f"outbox message {message_id}: the stored payload is not JSON ({reason})",
            message_id=message_id,
        ) from None
    if not isinstance(value, dict):
        raise UnreadableMessageError(
            f"outbox message {message_id}: the stored payload is not a JSON object",
            message_id=message_id,
        )


def claim_next(*, session: Session, now: float | None = None) -> OutboxMessage | None:
    """Mark the oldest undelivered message ``sending`` and return it, if it is due.

    Returns None when the outbox is empty, when the oldest message is not due before
    ``now``, or when it is already ``sending`` (in flight): order is never broken.
    Raises :class:`UnreadableMessageError` (nothing changed) when the head's stored
    payload cannot be read back; dead-letter it with :func:`mark_dead` and go on.
    """
    now = time.time() if now is None else now
    head = _head(session)
    if head is None:
        return None
    message_id, state, due = head
    if state != "pending" or due > now:
        return None
    _check_payload(session, message_id)
    row = _get(session, message_id)
    row.state = "sending"
    session.add(row)
    session.flush()
    return row


def has_undelivered(*, session: Session) -> bool:
    """Whether any message is still ``pending`` or ``sending``."""
    return _head(session) is not None


def next_due(*, session: Session) -> float | None:
    """When the head of the queue may be sent (None: nothing pending)."""
    head = _head(session)
    return None if head is None or head[1] != "pending" else head[2]


def _get(session: Session, message_id: int) -> OutboxMessage:
    row = session.get(OutboxMessage, message_id)
    if row is None:
        raise MessageNotFoundError(f"no outbox message {message_id} (see `harness messages`)")
    return row


def _error_text(error: str) -> str:
    """``error`` as one storable line: no lone surrogates, no newlines, at most 500 chars."""
    return one_line(clean_text(error), 500)


def mark_sent(
    *,
    session: Session,
    message_id: int,
    discord_message_id: str | None,
    now: float | None = None,
) -> OutboxMessage:
    row = _get(session, message_id)
    row.state = "sent"
    row.attempts += 1
    row.sent_at = time.time() if now is None else now
    row.discord_message_id = None if discord_message_id is None else clean_text(discord_message_id)
    row.last_error = None
    session.add(row)
    drop_sent_bytes(session=session, message_id=message_id)
    return row


def mark_retry(
    *,
    session: Session,
    message_id: int,
    delay: float,
    error: str,
    now: float | None = None,
) -> OutboxMessage:
    """Back to ``pending``, not before ``now + delay``; it stays at the head of the queue."""
    row = _get(session, message_id)
    row.state = "pending"
    row.attempts += 1
    row.next_attempt_at = (time.time() if now is None else now) + max(delay, 0.0)
    row.last_error = _error_text(error)
    session.add(row)
    return row


def mark_dead(*, session: Session, message_id: int, error: str) -> None:
    """Give up on a message (Discord refused it, or it cannot be sent); later ones go on.

    Written as one UPDATE, without reading the row, so that a row whose payload cannot
    be read back can still be dead-lettered. Raises :class:`MessageNotFoundError`.
    """
    stmt = (
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id)
        .values(
            state="dead", attempts=col(OutboxMessage.attempts) + 1, last_error=_error_text(error)
        )
    )
    if session.exec(stmt).rowcount == 0:
        raise MessageNotFoundError(f"no outbox message {message_id} (see `harness messages`)")


def reset_stuck(*, session: Session) -> int:
    """At start-up: rows left ``sending`` by a crash go back to ``pending``; returns how many."""
    rows = session.exec(select(OutboxMessage).where(OutboxMessage.state == "sending")).all()
    for row in rows:
        row.state = "pending"
        session.add(row)
    return len(rows)


def _states(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The state of each id (in the order given, duplicates once); unknown ids refused."""
    wanted = list(dict.fromkeys(ids))
    q = select(OutboxMessage.id, OutboxMessage.state).where(col(OutboxMessage.id).in_(wanted))
    found = {int(i or 0): str(state) for i, state in session.exec(q).all()}
    for message_id in wanted:
        if message_id not in found:
            raise MessageNotFoundError(f"no outbox message {message_id} (see `harness messages`)")
    return {message_id: found[message_id] for message_id in wanted}


def retry_messages(*, session: Session, ids: Sequence[int], now: float | None = None) -> list[int]:
    """Put dead messages back in the queue: ``pending``, due ``now``, attempts reset to 0.

    A message keeps its id, hence its place in the delivery order: it is delivered
    before every message queued after it (and blocks them until it goes out or dies
    again), after every older one still waiting. Its nonce is unchanged too.

    All or nothing: :class:`MessageNotFoundError` for an unknown id and
    :class:`MessageStateError` for a message that is not dead (sent, or still queued)
    change nothing. Returns the ids, in the order given.
    """
    states = _states(session, ids)
    for message_id, state in states.items():
        if state == "sent":
            raise MessageStateError(
                f"outbox message {message_id} was already sent; queue new text with `harness send`"
            )
        if state != "dead":
            raise MessageStateError(f"outbox message {message_id} is {state}, already queued")
    when = time.time() if now is None else now
    session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(list(states)))
        .values(state="pending", attempts=0, next_attempt_at=when, last_error=None)
    )
    return list(states)


def drop_messages(*, session: Session, ids: Sequence[int], by: str) -> list[int]:
    """Give up on queued (``pending``) or dead messages: ``dead``, "dropped by <by>".

    All or nothing: :class:`MessageNotFoundError` for an unknown id and
    :class:`MessageStateError` for a message that was sent (final) or is being sent at
    this moment change nothing. Returns the ids, in the order given.
    """
    states = _states(session, ids)
    for message_id, state in states.items():
        if state == "sent":
            raise MessageStateError(
                f"outbox message {message_id} was already sent; it cannot be dropped"
            )
        if state == "sending":
            raise MessageStateError(
                f"outbox message {message_id} is being sent (or was when the worker "
                "stopped); it cannot be dropped until it is sent or back in the queue"
            )
    session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(list(states)))
        .values(state="dead", last_error=_error_text(f"dropped by {by}"))
    )
    return list(states)


def list_messages(
    *, session: Session, state: str | None = None, limit: int = 50
) -> list[OutboxMessage]:
    """Newest first, optionally only one state."""
    if state is not None and state not in STATES:
        raise InvalidMessageError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    q = select(OutboxMessage)
    if state is not None:
        q = q.where(OutboxMessage.state == state)
    q = q.order_by(col(OutboxMessage.id).desc()).limit(limit)
    return list(session.exec(q).all())


def count_by_state(*, session: Session) -> dict[str, int]:
    """``{"pending": n, "sending": n, "sent": n, "dead": n}`` (every state present)."""
    q = select(OutboxMessage.state, func.count()).group_by(col(OutboxMessage.state))
    counts = {state: 0 for state in STATES}
    for state, n in session.exec(q).all():
        counts[state] = n
    return counts
