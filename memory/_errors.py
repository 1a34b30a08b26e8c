"""Errors raised by the store, and the one place SQLite's errors become them.

StoreError                 anything the store cannot do, with a one-line message
 ├── SchemaTooNewError     the file was written by a newer Harness
 └── FTS5UnavailableError  this SQLite was built without FTS5

A :class:`StoreError` carries ``cause``, one word a caller may act on (retry a
``locked`` store, degrade on a ``full`` disk): ``readonly``, ``corrupt``, ``full``,
``locked``, ``cantopen``, ``io`` or ``other``. :func:`store_error` is the translation
from ``sqlite3`` and SQLAlchemy, used where they enter (``open_store``, ``Store.write``,
``Store.read``), so no caller ever sees a driver's exception or its traceback.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from ._text import clean_text, one_line

__all__ = ["FTS5UnavailableError", "SchemaTooNewError", "StoreError", "store_error"]

#: SQLite's primary result codes that we name (https://sqlite.org/rescode.html)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26
_FULL_BELOW_BYTES = 64 * 1024


class StoreError(Exception):
    """The store cannot be opened or used; the message names the file and the cause."""

    def __init__(self, message: str, *, cause: str = "other") -> None:
        super().__init__(message)
        self.cause = cause


class SchemaTooNewError(StoreError):
    """The database was written by a newer version; we refuse rather than corrupt it."""


class FTS5UnavailableError(StoreError):
    """SQLite lacks the FTS5 extension that full-text search needs."""


def _driver_error(exc: BaseException) -> BaseException:
    """The sqlite3 exception under a SQLAlchemy one (or ``exc`` itself)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def _code(exc: BaseException, text: str) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    # Errors raised by the driver itself (not by SQLite) carry no code: go by the text.
    for needle, guess in (
        ("readonly", _SQLITE_READONLY),
        ("not a database", _SQLITE_NOTADB),
        ("malformed", _SQLITE_CORRUPT),
        ("disk is full", _SQLITE_FULL),
        ("locked", _SQLITE_BUSY),
        ("unable to open", _SQLITE_CANTOPEN),
    ):
        if needle in text:
            return guess
    return None


def _not_writable(path: Path) -> str | None:
    """Why the database at ``path`` cannot be written, when the filesystem says so."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"the filesystem holding {folder} is mounted read-only"
        if path.exists() and not os.access(path, os.W_OK):
            return "the file does not allow writing"
        if not os.access(folder, os.W_OK):
            return f"its folder {folder} does not allow writing (SQLite writes its -wal there)"
    except OSError:
        return None
    return None


def _disk_full(path: Path) -> bool:
    """True when the filesystem holding ``path`` has (almost) no room left: an I/O error
    there (SQLite growing its -shm or -wal) is a full disk, whatever SQLite calls it."""
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < _FULL_BELOW_BYTES


def store_error(exc: BaseException, path: Path | str, *, busy_timeout_s: float) -> StoreError:
    """One line for a sqlite3 / SQLAlchemy error on the database at ``path``.

    ``busy_timeout_s`` is how long a writer waited before SQLite gave up (named in the
    message for a locked database). Never raises.
    """
    orig = _driver_error(exc)
    detail = one_line(clean_text(str(orig)), 200) or type(orig).__name__
    code = _code(orig, detail.lower())
    db = f"the database {path}"
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM):
        why = _not_writable(Path(path))
        if why is not None or code == _SQLITE_READONLY:
            return StoreError(
                f"{db} is read-only ({why or detail}); the store needs to write to it",
                cause="readonly",
            )
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return StoreError(
            f"{db} is not a database (corrupt, or another kind of file: {detail}); move it "
            "aside to start a new one",
            cause="corrupt",
        )
    if code == _SQLITE_FULL or (code == _SQLITE_IOERR and _disk_full(Path(path))):
        return StoreError(
            f"the disk holding {db} is full (or the file reached its size limit); free some "
            "space and try again",
            cause="full",
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreError(
            f"{db} is locked by another process for more than {busy_timeout_s:g} s; "
            "try again when it has finished",
            cause="locked",
        )
    if code in (_SQLITE_CANTOPEN, _SQLITE_PERM):
        return StoreError(f"cannot open {db} ({detail})", cause="cantopen")
    if code == _SQLITE_IOERR:
        return StoreError(f"cannot read or write {db} ({detail})", cause="io")
    return StoreError(f"{db}: {detail}")


#: what the store translates: SQLite's errors, raw or wrapped by SQLAlchemy (misuse of
#: SQLAlchemy itself is a bug of ours and keeps its traceback)
DRIVER_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, DBAPIError)
