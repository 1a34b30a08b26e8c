"""What the store holds is readable by every reader, and by no other user.

JSON columns never hold NaN/Infinity (SQLite's JSON functions refuse them) nor lone
surrogates; a text value with a lone surrogate is stored cleaned instead of making
sqlite3 raise; the state dir is 0700 and the database files 0600 whatever the umask.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import mistakes as ml
from memory import (
    InvalidTextError,
    Run,
    add_note,
    last_heartbeat,
    open_store,
    record_heartbeat,
    request_abort,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Everyone may read what is created (umask 0): the store must not rely on the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_json_columns_hold_strict_json_and_keep_the_fact(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    with open_store(path) as store, store.write() as s:
        s.add(
            Run(
                id="r1",
                name="r",
                progress={"loss": math.nan, "up": math.inf, "down": -math.inf, "k\ud800": "v"},
            )
        )
    raw = sqlite3.connect(path)
    stored, valid = raw.execute("SELECT progress, json_valid(progress) FROM run").fetchone()
    raw.close()
    assert valid == 1
    assert "NaN" not in stored and "Infinity" not in stored and "\\ud800" not in stored
    with open_store(path) as store, store.read() as s:
        row = s.get(Run, "r1")
        assert row is not None
        assert row.progress == {"loss": "nan", "up": "inf", "down": "-inf", "k\ufffd": "v"}


def test_the_incident_search_index_takes_every_evidence_the_store_writes(tmp_path: Path) -> None:
    evidence = {
        "loss": math.nan,
        "grad_norm": math.inf,
        "floor": -math.inf,
        "huge": 10**400,
        "text": "bad \ud800 byte",
        "nested": {"deep": [[[1.5, math.nan]]], "when": ("a", "b")},
        "marker": "zzyzx",
    }
    with ml.open_log(tmp_path / "harness.db") as store:
        with store.write() as s:
            ml.record_incident(
                session=s, rule="nonfinite", summary="loss \udcff is NaN", evidence=evidence
            )
        with store.read() as s:
            hits = ml.search(session=s, query="zzyzx", kinds=("incident",))
            (incident,) = ml.list_incidents(session=s)
    assert [h.id for h in hits] == [str(incident.id)]
    assert incident.summary == "loss \ufffd is NaN"
    assert incident.evidence["loss"] == "nan"
    assert incident.evidence["text"] == "bad \ufffd byte"


def test_text_with_a_lone_surrogate_is_stored_cleaned_not_raised(tmp_path: Path) -> None:
    with open_store(tmp_path / "harness.db") as store:
        with store.write() as s:
            s.add(Run(id="r1", name="r", summary="failed: \udcff\udcfe in stderr"))
            record_heartbeat(session=s, text="step \ud800", health="ok", payload={})
            s.execute(text("UPDATE run SET source = :v"), {"v": "spec \ud801.toml"})
        with store.write() as s:
            row = request_abort(session=s, run_id="r1", reason="stop \udc80", by="chat \ud800")
            assert row.abort_requested == "stop \ufffd"
        with store.read() as s:
            got = s.get(Run, "r1")
            beat = last_heartbeat(session=s)
        assert got is not None and beat is not None
        assert got.summary == "failed: \ufffd\ufffd in stderr"
        assert got.source == "spec \ufffd.toml"
        assert got.abort_by == "chat \ufffd"
        assert beat.text == "step \ufffd"


@pytest.mark.parametrize("kind", ["note", "order", "inbox"])
def test_a_note_that_is_not_unicode_is_refused_with_one_line(tmp_path: Path, kind: str) -> None:
    with open_store(tmp_path / "harness.db") as store:
        with pytest.raises(InvalidTextError) as info, store.write() as s:
            add_note(session=s, text="hello \udcff world", kind=kind)
        assert "U+DCFF" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(InvalidTextError, match="author"), store.write() as s:
            add_note(session=s, text="fine", kind=kind, author="\ud800")


def test_a_new_state_dir_is_0700_and_the_database_files_0600(
    tmp_path: Path, open_umask: None
) -> None:
    home = tmp_path / "home" / "state"
    path = home / "harness.db"
    with open_store(path) as store, store.write() as s:
        add_note(session=s, text="keeps the WAL open")
        wal, shm = path.with_name("harness.db-wal"), path.with_name("harness.db-shm")
        assert wal.exists() and shm.exists()
        assert _mode(wal) == 0o600
        assert _mode(shm) == 0o600
    assert _mode(home) == 0o700
    assert _mode(path) == 0o600


def test_an_existing_state_dir_others_can_read_is_tightened_with_one_warning(
    tmp_path: Path, open_umask: None
) -> None:
    home = tmp_path / "state"
    path = home / "harness.db"
    open_store(path).close()
    home.chmod(0o755)
    path.chmod(0o644)
    warnings: list[str] = []
    open_store(path, warn=warnings.append).close()
    assert _mode(home) == 0o700
    assert _mode(path) == 0o600
    assert len(warnings) == 1 and str(home) in warnings[0] and "0755" in warnings[0]
    open_store(path, warn=warnings.append).close()
    assert len(warnings) == 1  # once tightened, nothing more to say


def test_a_folder_made_for_us_without_a_database_is_tightened_quietly(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    warnings: list[str] = []
    open_store(home / "harness.db", warn=warnings.append).close()
    assert _mode(home) == 0o700
    assert warnings == []


def test_a_shared_sticky_folder_is_never_changed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    (shared / "harness.db").touch()
    warnings: list[str] = []
    open_store(shared / "harness.db", warn=warnings.append).close()
    assert _mode(shared) == 0o1777
    assert len(warnings) == 1 and "not ours to change" in warnings[0]
    assert _mode(shared / "harness.db") == 0o600
