"""Notes, standing orders and the inbox in a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory import (
    MAX_NOTE_CHARS,
    NoteNotFoundError,
    Store,
    add_note,
    get_marker,
    list_notes,
    mark_read,
    open_store,
    remove_note,
    set_marker,
    unread_inbox,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "harness.db")


def test_notes_are_kept_by_kind_in_the_order_written(store: Store) -> None:
    with store.write() as s:
        add_note(session=s, text="  lr 3e-4 diverged at step 80  ", ts=100.0)
        add_note(session=s, text="never run two jobs at once", kind="order", ts=101.0)
        add_note(session=s, text="try lr 1e-4 next", ts=102.0)
    store.close()
    reopened = open_store(store.path)  # durable, not just in a session
    with reopened.read() as s:
        notes = list_notes(session=s, kind="note")
        orders = list_notes(session=s, kind="order")
        everything = list_notes(session=s)
    assert [n.text for n in notes] == ["lr 3e-4 diverged at step 80", "try lr 1e-4 next"]
    assert [n.text for n in orders] == ["never run two jobs at once"]
    assert orders[0].author == "terminal" and orders[0].read_at is None
    assert len(everything) == 3
    with reopened.read() as s:
        newest = list_notes(session=s, kind="note", limit=1)
    assert [n.text for n in newest] == ["try lr 1e-4 next"]


def test_empty_or_too_long_text_is_refused_with_a_clear_message(store: Store) -> None:
    with store.write() as s:
        with pytest.raises(ValueError, match="standing order needs some text"):
            add_note(session=s, text="   \n", kind="order")
        with pytest.raises(ValueError, match=f"limited to {MAX_NOTE_CHARS} characters"):
            add_note(session=s, text="x" * (MAX_NOTE_CHARS + 1))
        with pytest.raises(ValueError, match="kind must be one of"):
            add_note(session=s, text="hello", kind="memo")
    with store.read() as s:
        assert list_notes(session=s) == []


def test_remove_is_a_soft_delete_and_checks_the_kind(store: Store) -> None:
    with store.write() as s:
        order = add_note(session=s, text="checkpoint every 500 steps", kind="order")
        note = add_note(session=s, text="just a note")
    assert order.id is not None and note.id is not None
    with store.write() as s:
        with pytest.raises(NoteNotFoundError, match=f"no standing order #{note.id}"):
            remove_note(session=s, note_id=note.id, kind="order")
        remove_note(session=s, note_id=order.id, kind="order")
    with store.read() as s:
        assert list_notes(session=s, kind="order") == []
        kept = list_notes(session=s, kind="order", include_removed=True)
    assert [n.text for n in kept] == ["checkpoint every 500 steps"]
    assert kept[0].removed_at is not None
    with store.write() as s, pytest.raises(NoteNotFoundError, match="no standing order"):
        remove_note(session=s, note_id=order.id, kind="order")  # already removed
    with store.write() as s, pytest.raises(NoteNotFoundError, match="no note #999"):
        remove_note(session=s, note_id=999)


def test_inbox_is_unread_until_marked(store: Store) -> None:
    with store.write() as s:
        first = add_note(session=s, text="is the run still alive?", kind="inbox", author="alice")
        add_note(session=s, text="stop at 10k steps", kind="inbox", author="bob")
        add_note(session=s, text="not inbox")
    with store.read() as s:
        unread = unread_inbox(session=s)
    assert [(n.author, n.text) for n in unread] == [
        ("alice", "is the run still alive?"),
        ("bob", "stop at 10k steps"),
    ]
    assert first.id is not None
    with store.write() as s:
        assert mark_read(session=s, ids=[first.id], now=500.0) == 1
        assert mark_read(session=s, ids=[first.id]) == 0  # read once, stays read at 500
    with store.read() as s:
        assert [n.author for n in unread_inbox(session=s)] == ["bob"]
        read = list_notes(session=s, kind="inbox")
    assert read[0].read_at == 500.0


def test_marker_remembers_the_latest_time(store: Store) -> None:
    with store.read() as s:
        assert get_marker(session=s, name="brief") is None
    with store.write() as s:
        set_marker(session=s, name="brief", ts=10.0)
    with store.write() as s:
        set_marker(session=s, name="brief", ts=20.0)
    with store.read() as s:
        assert get_marker(session=s, name="brief") == 20.0
