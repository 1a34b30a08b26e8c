"""Poison messages never block the outbox (issue 10, class 1).

Through a real sidecar app on 127.0.0.1, a real SQLite outbox and the local fake Discord:
text that could never be delivered is refused at the door, and a row that fails anyway
(stored by an older version, written by hand, refused with odd text) is dead-lettered
with an incident while the messages behind it go out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from memory import Store
from mistakes import list_incidents, open_log
from sidecar import (
    DeliveryWorker,
    DiscordConfig,
    InvalidMessageError,
    count_by_state,
    create_app,
    enqueue,
    list_messages,
    serve,
)
from sidecar._outbox import store_prepared
from tests.fakes.discord_server import FakeDiscord

TOKEN = "test-api-token-0123456789"
CHANNEL = "123456789"
LONE = "\ud800"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_log(tmp_path / "harness.db")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def base_url(store: Store) -> AsyncIterator[str]:
    runner = await serve(create_app(store=store, token=TOKEN), port=0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def worker(store: Store, fake: FakeDiscord) -> DeliveryWorker:
    config = DiscordConfig(
        bot_token=SecretStr(fake.bot_token),
        channel_id=CHANNEL,
        api_base=fake.api_base,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
        poll_s=0.1,
    )
    return DeliveryWorker(store, config)


async def post(base_url: str, body: str, **headers: str) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {TOKEN}", **headers}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/send", data=body.encode(), headers=hdrs) as response,
    ):
        return response.status, await response.json()


def smuggle(store: Store, payload: dict[str, Any], kind: str = "text") -> int:
    """Store a row the way an older version (or a hand edit) could: no validation."""
    with store.write() as s:
        [[message_id]] = store_prepared(session=s, messages=[(kind, [payload])])
    return message_id


def rows(store: Store) -> dict[int, Any]:
    with store.read() as s:
        return {m.id or 0: m for m in list_messages(session=s)}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"text": "bad \\ud800 text"}', "text"),
        ('{"text": "\\udfff"}', "text"),
        ('{"embeds": [{"title": "\\ud800"}]}', "embeds[0].title"),
        ('{"embeds": [{"footer": {"text": "ok", "icon_url": "\\ud83d"}}]}', "icon_url"),
        ('{"text": "x", "kind": "\\ud800"}', "kind"),
    ],
)
async def test_invalid_unicode_is_refused_at_the_door_with_400(
    base_url: str, store: Store, body: str, where: str
) -> None:
    status, answer = await post(base_url, body)

    assert status == 400
    assert where in answer["error"]
    assert "\n" not in answer["error"]
    assert rows(store) == {}


def test_enqueue_refuses_invalid_unicode_and_non_finite_numbers(store: Store) -> None:
    with store.write() as s:
        with pytest.raises(InvalidMessageError, match=r"text is not valid Unicode: U\+D800"):
            enqueue(session=s, text=f"bad {LONE}")
        with pytest.raises(InvalidMessageError, match="finite"):
            enqueue(session=s, embeds=[{"title": "t", "image": {"url": "u", "width": 1e999}}])
    assert rows(store) == {}


async def test_a_poison_row_is_dead_lettered_and_later_messages_still_go_out(
    base_url: str, store: Store, fake: FakeDiscord
) -> None:
    poison = smuggle(store, {"content": f"cannot encode {LONE}"})
    status, answer = await post(base_url, json.dumps({"text": "after the poison"}))
    assert status == 202

    assert await worker(store, fake).drain(timeout=10)

    assert [m.content for m in fake.messages] == ["after the poison"]
    stored = rows(store)
    assert stored[poison].state == "dead"
    assert "UnicodeEncodeError" in (stored[poison].last_error or "")
    assert [stored[i].state for i in answer["ids"]] == ["sent"]
    with store.read() as s:
        [incident] = list_incidents(session=s, rule="delivery")
    assert f"outbox message {poison} cannot be sent" in incident.summary
    assert incident.evidence["outbox_id"] == poison


async def test_a_row_whose_payload_cannot_be_read_back_does_not_block(
    store: Store, fake: FakeDiscord
) -> None:
    broken = smuggle(store, {"content": "soon unreadable"})
    with store.write() as s:
        s.connection().exec_driver_sql(
            "UPDATE outbox_message SET payload = '{not json' WHERE id = ?", (broken,)
        )
        enqueue(session=s, text="behind it")

    assert await worker(store, fake).drain(timeout=10)

    assert [m.content for m in fake.messages] == ["behind it"]
    with store.read() as s:
        counts = count_by_state(session=s)
        [incident] = list_incidents(session=s, rule="delivery")
    assert counts == {"pending": 0, "sending": 0, "sent": 1, "dead": 1}
    assert "not JSON" in incident.summary


async def test_a_refusal_with_odd_text_is_still_recorded(store: Store, fake: FakeDiscord) -> None:
    """Discord's error text ends up in SQLite: a lone surrogate in it must not wedge the row."""
    fake.refuse_next(status=400, code=50035, message=f"Invalid Form Body {LONE}")
    with store.write() as s:
        enqueue(session=s, text="refused")
        enqueue(session=s, text="accepted")

    assert await worker(store, fake).drain(timeout=10)

    assert [m.content for m in fake.messages] == ["accepted"]
    dead = [m for m in rows(store).values() if m.state == "dead"]
    assert len(dead) == 1 and "Invalid Form Body \ufffd" in (dead[0].last_error or "")


async def test_poison_left_from_before_a_restart_does_not_block_the_next_worker(
    store: Store, fake: FakeDiscord
) -> None:
    smuggle(store, {"content": f"old poison {LONE}"})
    with store.write() as s:
        s.connection().exec_driver_sql("UPDATE outbox_message SET state = 'sending'")
        enqueue(session=s, text="new")

    assert await worker(store, fake).drain(timeout=10)

    assert [m.content for m in fake.messages] == ["new"]


async def test_a_row_that_keeps_failing_after_the_send_is_set_aside(
    store: Store, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault no one foresaw, on one row, after Discord accepted it: the worker survives,
    and after MAX_STRIKES the row is dead-lettered instead of being resent for ever."""
    import sidecar._worker as worker_module

    real_mark_sent = worker_module.mark_sent
    with store.write() as s:
        [cursed] = enqueue(session=s, text="cursed")
        enqueue(session=s, text="later")

    def mark_sent(*, session: Any, message_id: int, **kw: Any) -> Any:
        if message_id == cursed.id:
            raise RuntimeError("an unforeseen fault on this row")
        return real_mark_sent(session=session, message_id=message_id, **kw)

    monkeypatch.setattr(worker_module, "mark_sent", mark_sent)
    task = asyncio.create_task(worker(store, fake).run())
    try:
        async with asyncio.timeout(15):
            while "later" not in [m.content for m in fake.messages]:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert cursed.id is not None
    row = rows(store)[cursed.id]
    assert row.state == "dead" and "an unforeseen fault" in (row.last_error or "")
    assert len([r for r in fake.requests if r.status == 200]) == worker_module.MAX_STRIKES + 1
    with store.read() as s:
        [incident] = list_incidents(session=s, rule="delivery")
    assert f"outbox message {cursed.id} cannot be sent" in incident.summary
