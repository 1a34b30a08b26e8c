"""The store speaks in one line: every SQLite fault is a StoreError naming the file and
the cause, tested against the real thing (a read-only filesystem, a full one, a file of
random bytes, a lock held by another connection)."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from memory import Store, StoreError, add_note, list_notes, open_store
from tests.memory.mounts import read_only_state, tmpfs


def _one_line(exc: pytest.ExceptionInfo[StoreError], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_a_file_of_random_bytes_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    path.write_bytes(random.Random(7).randbytes(20_000))
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert info.value.cause == "corrupt"
    assert "is not a database (corrupt, or another kind of file" in _one_line(info, path)


def test_a_database_with_garbled_pages_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    with open_store(path) as store, store.write() as s:
        for i in range(50):
            add_note(session=s, text=f"note {i} " + "x" * 500)
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096:] = random.Random(3).randbytes(len(data) - 4096)  # keep the header page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info, open_store(path) as store, store.read() as s:
        list_notes(session=s)
    assert info.value.cause == "corrupt"
    _one_line(info, path)


def test_a_full_database_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    store = open_store(path)
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    store.engine.dispose()

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    with pytest.raises(StoreError) as info, store.write() as s:
        for i in range(100):
            add_note(session=s, text=f"{i} " + "y" * 3000)
    assert info.value.cause == "full"
    assert f"the disk holding the database {path} is full" in _one_line(info, path)
    with store.read() as s:  # nothing half-written: the transaction was rolled back
        assert list_notes(session=s) == []
    store.close()


def test_a_full_disk_says_so_in_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="1m") as fs:
        path = fs / "state" / "harness.db"
        with open_store(path) as store:
            with (fs / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 65536)
            with pytest.raises(StoreError) as info, store.write() as s:
                for i in range(100):
                    add_note(session=s, text=f"{i} " + "z" * 3000)
            assert info.value.cause == "full"
            assert "is full" in _one_line(info, path)


@pytest.fixture
def readonly_db(tmp_path: Path) -> Iterator[Path]:
    with read_only_state(tmp_path) as home:
        yield home / "harness.db"


def test_a_read_only_database_says_so_in_one_line(readonly_db: Path) -> None:
    with (
        pytest.raises(StoreError) as info,
        open_store(readonly_db) as store,
        store.write() as s,
    ):
        add_note(session=s, text="one more")
    assert info.value.cause == "readonly"
    assert f"the database {readonly_db} is read-only" in _one_line(info, readonly_db)


def test_a_lock_held_past_the_busy_timeout_says_so(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    store = open_store(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreError) as info, store.write() as s:
            add_note(session=s, text="waits, then gives up")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert info.value.cause == "locked"
    assert "is locked by another process for more than 0.2 s" in _one_line(info, path)
    with store.write() as s:  # the store is still usable once the lock is gone
        add_note(session=s, text="now it goes in")
    store.close()


def test_errors_of_the_callers_own_pass_through_unchanged(tmp_path: Path) -> None:
    with (
        open_store(tmp_path / "h.db") as store,
        pytest.raises(ValueError, match="needs some text"),
        store.write() as s,
    ):
        add_note(session=s, text="   ")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_database_path_that_is_not_a_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "harness.db"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would hang
    else:
        path.mkdir()
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert "not a regular file" in str(info.value) or "is a folder" in str(info.value)
    _one_line(info, path)


def test_the_store_is_usable_after_a_translated_error(tmp_path: Path) -> None:
    store: Store = open_store(tmp_path / "h.db", busy_timeout_s=0.1)
    with pytest.raises(StoreError), store.write() as s:
        s.connection().exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
    with store.write() as s:
        add_note(session=s, text="fine")
    with store.read() as s:
        assert [n.text for n in list_notes(session=s)] == ["fine"]
    store.close()


def test_a_new_database_on_a_read_only_filesystem_says_so(tmp_path: Path) -> None:
    with read_only_state(tmp_path) as home:
        path = home / "other.db"
        with pytest.raises(StoreError) as info:
            open_store(path)
    assert info.value.cause == "readonly"
    assert f"cannot create the database {path}" in _one_line(info, path)
