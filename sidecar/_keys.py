"""Idempotency keys for ``POST /send``: a retried request is answered, not stored twice.

A client sends ``Idempotency-Key: <1-200 printable ASCII characters>`` with a request.
The first request under a key stores its message and remembers ``(key, digest of the
body, ids)``; a later request under the same key within :data:`KEY_TTL_S` stores nothing
and gets the same ids back, or :class:`KeyConflictError` when its body differs. Keys
older than that are forgotten (pruned when a keyed request is written), so a key may be
reused after a day.

Like the outbox, every function takes a session keyword and does not commit; the
lookup, the message's rows and the key are written in one transaction, so two requests
racing with one key cannot both store.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, delete

from ._errors import InvalidMessageError, KeyConflictError

__all__ = [
    "KEY_HEADER",
    "KEY_TTL_S",
    "SendKey",
    "body_digest",
    "check_key",
    "recall_key",
    "remember_key",
]

KEY_HEADER = "Idempotency-Key"
KEY_TTL_S = 24 * 3600.0
_KEY_RE = re.compile(r"[\x20-\x7e]{1,200}")


class SendKey(SQLModel, table=True):
    """One idempotency key of ``POST /send``, the body it came with and the ids it got."""

    __tablename__ = "sidecar_send_key"

    key: str = Field(primary_key=True)
    digest: str
    ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: float = Field(default_factory=time.time, index=True)


def check_key(raw: str) -> str:
    """The key itself; :class:`InvalidMessageError` unless 1-200 printable ASCII characters."""
    if not _KEY_RE.fullmatch(raw) or not raw.strip():
        raise InvalidMessageError(
            f"the {KEY_HEADER} header must be 1 to 200 printable ASCII characters"
        )
    return raw


def body_digest(body: Any) -> str:
    """A digest of a JSON body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2s(canonical.encode("ascii")).hexdigest()


def recall_key(
    *, session: Session, key: str, digest: str, now: float | None = None
) -> list[int] | None:
    """The ids stored under ``key`` within its lifetime, or None for a new key.

    Raises :class:`KeyConflictError` when the key came with another body. Forgets keys
    older than :data:`KEY_TTL_S` first.
    """
    now = time.time() if now is None else now
    session.exec(delete(SendKey).where(col(SendKey.created_at) < now - KEY_TTL_S))
    row = session.get(SendKey, key)
    if row is None:
        return None
    if row.digest != digest:
        raise KeyConflictError(
            f"{KEY_HEADER} {key!r} was already used for a different message; "
            "use a new key for new text"
        )
    return list(row.ids)


def remember_key(
    *, session: Session, key: str, digest: str, ids: list[int], now: float | None = None
) -> None:
    """Remember that ``key`` (with this body) stored ``ids``."""
    created = time.time() if now is None else now
    session.add(SendKey(key=key, digest=digest, ids=list(ids), created_at=created))
    session.flush()
