"""The outbox table: FIFO claims with head-of-line blocking, nonces, crash recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

import sidecar
from memory import Store
from mistakes import open_log
from sidecar import (
    InvalidMessageError,
    MessageNotFoundError,
    MessageStateError,
    OutboxMessage,
    claim_next,
    count_by_state,
    drop_messages,
    enqueue,
    list_messages,
    mark_dead,
    mark_retry,
    mark_sent,
    reset_stuck,
    retry_messages,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_log(tmp_path / "harness.db")


def test_every_public_name_is_exported_once() -> None:
    assert len(set(sidecar.__all__)) == len(sidecar.__all__)
    assert all(hasattr(sidecar, name) for name in sidecar.__all__)


def test_messages_are_claimed_oldest_first_and_a_retry_blocks_the_queue(store: Store) -> None:
    with store.write() as s:
        a, b = enqueue(session=s, text="a", now=100.0) + enqueue(session=s, text="b", now=100.0)
    assert a.id is not None and b.id is not None

    with store.write() as s:
        first = claim_next(session=s, now=100.0)
        assert first is not None and first.id == a.id
        assert claim_next(session=s, now=100.0) is None  # "a" is in flight: "b" waits
        mark_retry(session=s, message_id=a.id, delay=5.0, error="503", now=100.0)
    with store.write() as s:
        assert claim_next(session=s, now=104.0) is None  # "a" not due, and "b" may not pass it
        again = claim_next(session=s, now=105.0)
        assert again is not None and again.id == a.id and again.attempts == 1
        mark_dead(session=s, message_id=a.id, error="404 Unknown Channel")
    with store.write() as s:
        nxt = claim_next(session=s, now=105.0)  # a dead message does not block
        assert nxt is not None and nxt.id == b.id
        mark_sent(session=s, message_id=b.id, discord_message_id="42", now=106.0)
    with store.read() as s:
        assert count_by_state(session=s) == {"pending": 0, "sending": 0, "sent": 1, "dead": 1}
        done = list_messages(session=s, state="sent")
    assert [(m.id, m.discord_message_id, m.sent_at) for m in done] == [(b.id, "42", 106.0)]


def test_long_text_is_stored_as_several_rows_in_order(store: Store) -> None:
    text = "\n".join(f"{i:04d} " + "z" * 95 for i in range(45))  # 4,499 characters

    with store.write() as s:
        rows = enqueue(session=s, text=text, kind="heartbeat")

    assert len(rows) == 3
    assert [r.id for r in rows] == sorted(r.id for r in rows if r.id is not None)
    assert "".join(r.payload["content"] for r in rows) == text
    assert {r.kind for r in rows} == {"heartbeat"}


def test_nonces_are_short_distinct_and_stable_across_a_reopen(store: Store, tmp_path: Path) -> None:
    with store.write() as s:
        rows = [r for i in range(20) for r in enqueue(session=s, text=f"m{i}")]
    nonces = [r.nonce for r in rows]
    assert all(n is not None and len(n) <= 25 for n in nonces)
    assert len(set(nonces)) == 20
    store.close()

    reopened = open_log(tmp_path / "harness.db")
    with reopened.read() as s:
        again = {m.id: m.nonce for m in list_messages(session=s, limit=100)}
    assert [again[r.id] for r in rows if r.id is not None] == nonces


def test_another_database_gives_its_first_message_a_different_nonce(tmp_path: Path) -> None:
    one, two = open_log(tmp_path / "one.db"), open_log(tmp_path / "two.db")
    with one.write() as s1, two.write() as s2:
        [a] = enqueue(session=s1, text="same")
        [b] = enqueue(session=s2, text="same")
    assert a.id == b.id == 1
    assert a.nonce != b.nonce  # a fresh install never collides with Discord's nonce memory


def test_reset_stuck_returns_in_flight_messages_to_the_queue(store: Store) -> None:
    with store.write() as s:
        enqueue(session=s, text="x", now=1.0)
        claimed = claim_next(session=s, now=1.0)
    assert claimed is not None

    with store.write() as s:
        assert reset_stuck(session=s) == 1
    with store.write() as s:
        again = claim_next(session=s, now=1.0)
    assert again is not None and again.id == claimed.id and again.nonce == claimed.nonce


def test_bad_kind_and_bad_state_are_refused(store: Store) -> None:
    with store.write() as s, pytest.raises(InvalidMessageError, match="kind must be one of"):
        enqueue(session=s, text="x", kind="shout")
    with store.read() as s, pytest.raises(InvalidMessageError, match="state must be one of"):
        list_messages(session=s, state="lost")
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 0


def test_ids_and_nonces_are_never_reused_after_rows_are_deleted(store: Store) -> None:
    with store.write() as s:
        [old] = enqueue(session=s, text="old")
    with store.write() as s:
        s.delete(s.get(OutboxMessage, old.id))

    with store.write() as s:
        [new] = enqueue(session=s, text="new")

    assert new.id is not None and old.id is not None and new.id > old.id
    assert new.nonce != old.nonce


def _states(store: Store) -> dict[int, tuple[str, int, str | None]]:
    with store.read() as s:
        return {m.id or 0: (m.state, m.attempts, m.last_error) for m in list_messages(session=s)}


def test_a_retried_message_goes_back_to_its_place_in_the_queue(store: Store) -> None:
    with store.write() as s:
        [a] = enqueue(session=s, text="a", now=1.0)
        [b] = enqueue(session=s, text="b", now=1.0)
        assert a.id is not None and b.id is not None
        for _ in range(3):
            mark_retry(session=s, message_id=a.id, delay=0, error="503", now=1.0)
        mark_dead(session=s, message_id=a.id, error="refused")

    with store.write() as s:
        assert retry_messages(session=s, ids=[a.id, a.id], now=5.0) == [a.id]
    assert _states(store)[a.id] == ("pending", 0, None)
    with store.write() as s:
        first = claim_next(session=s, now=5.0)
    assert first is not None and first.id == a.id  # before b, which was queued after it


def test_retry_and_drop_are_all_or_nothing(store: Store) -> None:
    with store.write() as s:
        [a] = enqueue(session=s, text="a")
        [b] = enqueue(session=s, text="b")
        assert a.id is not None and b.id is not None
        mark_sent(session=s, message_id=a.id, discord_message_id="1")
    before = _states(store)

    with store.write() as s, pytest.raises(MessageStateError, match="already sent"):
        drop_messages(session=s, ids=[b.id, a.id], by="terminal")
    with store.write() as s, pytest.raises(MessageNotFoundError, match="no outbox message 99"):
        drop_messages(session=s, ids=[b.id, 99], by="terminal")
    with store.write() as s, pytest.raises(MessageStateError, match="pending, already queued"):
        retry_messages(session=s, ids=[b.id])
    with store.write() as s, pytest.raises(MessageStateError, match="already sent"):
        retry_messages(session=s, ids=[a.id])
    assert _states(store) == before

    with store.write() as s:
        assert drop_messages(session=s, ids=[b.id], by="terminal") == [b.id]
    assert _states(store)[b.id] == ("dead", 0, "dropped by terminal")


def test_a_message_in_flight_cannot_be_dropped(store: Store) -> None:
    with store.write() as s:
        [a] = enqueue(session=s, text="a")
        claim_next(session=s)
        assert a.id is not None
        with pytest.raises(MessageStateError, match="is being sent"):
            drop_messages(session=s, ids=[a.id], by="terminal")


def test_error_text_is_stored_as_one_clean_line(store: Store) -> None:
    with store.write() as s:
        [a] = enqueue(session=s, text="a")
        assert a.id is not None
        mark_retry(session=s, message_id=a.id, delay=0, error="bad \ud800\nnews " + "x" * 900)
    [(_, _, error)] = _states(store).values()
    assert error is not None and error.startswith("bad \ufffd news ") and len(error) == 500
