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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from ._errors import FTS5UnavailableError, SchemaTooNewError, StoreError

__all__ = ["SCHEMA_VERSION", "Store", "open_store"]

#: Bumped whenever any table changes shape. Version 0 means "empty file".
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15_000


def _configure(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, see module doc
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """An open database file. Use :meth:`write` and :meth:`read` for sessions."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session inside ``BEGIN IMMEDIATE``; commits on success, rolls back on error."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session inside a deferred transaction (a consistent snapshot in WAL)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
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


def _file_version(path: Path) -> int:
    """``PRAGMA user_version`` read without changing a byte of the file (read-only)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    finally:
        conn.close()


def open_store(path: str | Path) -> Store:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date.

    Raises :class:`StoreError` (one line, naming the file) when the file cannot be used,
    and :class:`SchemaTooNewError` when a newer Harness wrote it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
    version = _file_version(path)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path} was written by a newer Harness (schema {version}, this one knows "
            f"up to {SCHEMA_VERSION}); upgrade Harness or set HARNESS_HOME to another dir"
        )
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    _configure(engine)
    store = Store(path, engine)
    try:
        _check_fts5(engine)
        with store._write_engine.begin() as conn:
            SQLModel.metadata.create_all(conn)
            if version < SCHEMA_VERSION:
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except StoreError:
        engine.dispose()
        raise
    except DatabaseError as exc:
        engine.dispose()
        cause = str(exc.orig) if exc.orig is not None else str(exc)
        raise StoreError(f"cannot open {path}: {cause}") from None
    return store
