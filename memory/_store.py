"""The SQLite store: one file, WAL, explicit transactions, a versioned schema.

Why the transaction handling is done by hand: Python's sqlite3 driver, in its default
mode, opens a transaction lazily before the first INSERT/UPDATE/DELETE and never before
a SELECT, so a read-then-write sequence can interleave with another process and lose
an update. We switch the driver to autocommit (``isolation_level = None``) and emit
``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for :meth:`Store.write` (takes the write lock
up front, so the read part of a read-then-write is consistent) and a deferred ``BEGIN``
for :meth:`Store.read`. ``busy_timeout`` makes writers queue instead of failing.

Tables are whatever SQLModel models have been imported when the store is opened
(``memory`` itself defines none that depend on other packages; ``mistakes`` registers
its tables and FTS triggers through SQLAlchemy DDL events). ``PRAGMA user_version``
records the schema version so that an older Harness refuses a newer file.

What the file holds is always readable by every reader: JSON columns are written with
:func:`memory.storable` (no NaN or Infinity, which SQLite's JSON functions refuse; the
fact is kept as ``"nan"``/``"inf"`` text), and a text value with a lone surrogate, which
sqlite3 cannot encode at all, is stored with U+FFFD in its place. Entry points refuse
such text with one line first (:func:`memory.check_text`); this is the last line of
defence. Every SQLite error becomes a one-line :class:`StoreError` naming the file.

Nothing of it is readable by other users: the folder the store creates is 0700, the
database (and so its ``-wal`` and ``-shm``, which SQLite creates with the database's
mode) 0600, whatever the umask; an existing folder others can read is tightened, with
one warning line.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from ._errors import DRIVER_ERRORS, FTS5UnavailableError, SchemaTooNewError, StoreError, store_error
from ._json import storable
from ._text import clean_text

__all__ = ["SCHEMA_VERSION", "Store", "open_store"]

#: Bumped whenever any table changes shape. Version 0 means "empty file".
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 15.0
DIR_MODE, FILE_MODE = 0o700, 0o600
_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _stderr_warning(text: str) -> None:
    print(f"harness: warning: {text}", file=sys.stderr)


def _quiet(_text: str) -> None:
    return None


def _clean_value(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


def _clean_row(row: Any) -> Any:
    if isinstance(row, dict):
        return {k: _clean_value(v) for k, v in row.items()}
    if isinstance(row, tuple | list):
        return type(row)(_clean_value(v) for v in row)
    return row


def _use_wal(cur: sqlite3.Cursor, timeout_s: float) -> None:
    """Put the file in WAL mode (once: the mode is kept in the file).

    Switching a new file to WAL takes a lock for which SQLite does not wait (no busy
    handler): two processes opening a fresh database at once see "database is locked" at
    once. So the switch is retried here, for up to the busy timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _configure(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, see module doc
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _use_wal(cur, busy_timeout_s)
        cur.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _clean_parameters(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> tuple[str, Any]:
        # sqlite3 cannot encode a lone surrogate: it would raise UnicodeEncodeError.
        if executemany:
            return statement, [_clean_row(row) for row in parameters]
        return statement, _clean_row(parameters)


class Store:
    """An open database file. Use :meth:`write` and :meth:`read` for sessions.

    Both raise :class:`StoreError` (one line, naming the file and the cause) for any
    SQLite error inside them, the commit included; other exceptions pass unchanged.
    """

    def __init__(self, path: Path, engine: Engine, *, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = path
        self.engine = engine
        self.busy_timeout_s = busy_timeout_s
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except DRIVER_ERRORS as exc:
            raise store_error(exc, self.path, busy_timeout_s=self.busy_timeout_s) from None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session inside ``BEGIN IMMEDIATE``; commits on success, rolls back on error."""
        with (
            self._translated(),
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session inside a deferred transaction (a consistent snapshot in WAL)."""
        with (
            self._translated(),
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_fts5(engine: Engine) -> None:
    with engine.connect() as conn:
        options = {row[0] for row in conn.exec_driver_sql("PRAGMA compile_options")}
        if "ENABLE_FTS5" in options:
            return
        try:  # some builds load FTS5 without advertising it
            conn.exec_driver_sql("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x)")
            conn.exec_driver_sql("DROP TABLE temp._fts5_probe")
        except OperationalError:
            raise FTS5UnavailableError(
                f"SQLite {sqlite3.sqlite_version} was built without FTS5, which full-text "
                "search needs; install a Python whose sqlite3 has it"
            ) from None


def _file_version(path: Path, busy_timeout_s: float) -> int:
    """``PRAGMA user_version`` read without changing a byte of the file (read-only)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise store_error(exc, path, busy_timeout_s=busy_timeout_s) from None
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise store_error(exc, path, busy_timeout_s=busy_timeout_s) from None
    finally:
        conn.close()


def _cause(exc: OSError) -> str:
    """The StoreError cause of an OSError met while creating the folder or the file."""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "readonly"
    return "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "cantopen"


def _others_can_read(mode: int) -> bool:
    return bool(mode & 0o077)


def _private_dir(folder: Path, warn: Callable[[str], None]) -> None:
    """``folder`` exists and is 0700: created so, or tightened (with a warning) if ours."""
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}", cause=_cause(exc)) from None
    else:
        folder.chmod(DIR_MODE)  # mkdir's mode is cut by the umask; chmod is not
        return
    try:
        st = folder.stat()
    except OSError as exc:
        raise StoreError(f"cannot use {folder}: {exc.strerror}", cause="cantopen") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{folder} is not a folder; cannot keep the database in it")
    if not _others_can_read(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode)
    # Never touch a folder that is not ours, nor a shared one such as /tmp (sticky).
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        warn(f"{folder} (mode {mode:04o}) is readable by other users and not ours to change")
        return
    try:
        folder.chmod(DIR_MODE)
    except OSError as exc:
        warn(f"{folder} (mode {mode:04o}) is readable by other users: {exc.strerror}")
        return
    warn(f"{folder} was readable by other users (mode {mode:04o}); tightened to 0700")


def _private_files(path: Path) -> None:
    """The database file exists (empty when new) and it and its companions are 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"cannot create the database {path}: {exc.strerror}", cause=_cause(exc)
        ) from None
    else:
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"the database {path} is a folder, not a file", cause="cantopen")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(
            f"the database {path} is not a regular file (a pipe, socket or device)",
            cause="cantopen",
        )
    for suffix in _DB_SUFFIXES:
        companion = path.with_name(path.name + suffix)
        try:
            cst = companion.stat()
            if _others_can_read(cst.st_mode) and cst.st_uid == os.geteuid():
                companion.chmod(FILE_MODE)
        except OSError:
            continue  # absent (the usual case for companions), or not ours to change


def open_store(
    path: str | Path,
    *,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    warn: Callable[[str], None] = _stderr_warning,
) -> Store:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date.

    The folder and the file are made private (see the module docstring); ``warn`` gets
    one line when the folder of an existing database had to be tightened. ``busy_timeout_s`` is how
    long a writer waits for another process's lock. Raises :class:`StoreError` (one
    line, naming the file and the cause) when the file cannot be used, and
    :class:`SchemaTooNewError` when a newer Harness wrote it.
    """
    path = Path(path)
    # A folder with no database yet is new (another part may have just made it, umask
    # and all): it is tightened without a word. One that holds a database warns.
    _private_dir(path.parent, warn if os.path.lexists(path) else _quiet)
    _private_files(path)
    version = _file_version(path, busy_timeout_s)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path} was written by a newer Harness (schema {version}, this one knows "
            f"up to {SCHEMA_VERSION}); upgrade Harness or set HARNESS_HOME to another dir"
        )
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        json_serializer=storable,
    )
    _configure(engine, busy_timeout_s)
    store = Store(path, engine, busy_timeout_s=busy_timeout_s)
    try:
        _check_fts5(engine)
        with store._write_engine.begin() as conn:
            SQLModel.metadata.create_all(conn)
            if version < SCHEMA_VERSION:
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except StoreError:
        engine.dispose()
        raise
    except DRIVER_ERRORS as exc:
        engine.dispose()
        raise store_error(exc, path, busy_timeout_s=busy_timeout_s) from None
    return store
