from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from memory import SCHEMA_VERSION, SchemaTooNewError, StoreError, open_store


def test_open_creates_file_with_wal_version_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "harness.db"
    with open_store(path) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 5000
        assert conn.exec_driver_sql("PRAGMA user_version").scalar_one() == SCHEMA_VERSION
    assert path.exists()


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE future (x)")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError, match=r"newer Harness \(schema 6"):
        open_store(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_database_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_write_uses_begin_immediate_and_rolls_back_on_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.db") as store:
        with store.write() as s:
            s.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(RuntimeError), store.write() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("boom")
        with store.read() as s:
            assert s.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
        # While one writer holds the lock, a second BEGIN IMMEDIATE must wait, not
        # start a deferred transaction that could lose an update.
        other = sqlite3.connect(tmp_path / "h.db", timeout=0.1, isolation_level=None)
        with store.write() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()


def _open_at_once(path: str, barrier: object, results: object) -> None:
    import mistakes as ml

    barrier.wait()  # type: ignore[attr-defined]
    try:
        ml.open_log(path).close()
        results.put("ok")  # type: ignore[attr-defined]
    except Exception as exc:  # the failure is the finding: report it
        results.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock SQLite does not wait for: before the retry,
    about one in thirty of these opens failed at once with 'database is locked'."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    outcomes: list[str] = []
    for round_ in range(30):
        path = str(tmp_path / f"fresh-{round_}" / "harness.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
    assert outcomes == ["ok"] * 120, [o for o in outcomes if o != "ok"]


def test_a_run_prefix_is_matched_as_written_case_and_wildcards_included(tmp_path: Path) -> None:
    """Found by the API fuzz test: LIKE ignores case, so "L" found "live-1"."""
    import mistakes as ml
    from memory import Run, RunNotFoundError, find_run

    with ml.open_log(tmp_path / "h.db") as store:
        with store.write() as s:
            s.add(Run(id="live-1", name="live", spec={}, status="running", run_dir="/x"))
        with store.read() as s:
            assert find_run(session=s, ref="liv").id == "live-1"
            for ref in ("L", "LIVE", "l_ve", "li%", "liv%"):
                with pytest.raises(RunNotFoundError):
                    find_run(session=s, ref=ref)
