"""Files on outbox messages: stored with the message, validated, split, migrated, shown
without their bytes, uploaded as multipart, dead-lettered when their bytes are gone."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

import mistakes as ml
from memory import Store
from sidecar import (
    MAX_FILES,
    Attachment,
    DeliveryWorker,
    DiscordConfig,
    InvalidMessageError,
    count_by_state,
    create_app,
    enqueue,
    file_summaries,
    list_messages,
    serve,
)
from tests.fakes.discord_server import FakeDiscord

PNG_TYPE = "image/png"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def chart(name: str = "chart.png", data: bytes = PNG) -> Attachment:
    return Attachment(name, data, "image/png")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return ml.open_log(tmp_path / "harness.db")


def test_files_ride_with_the_last_text_chunk(store: Store) -> None:
    text = "\n".join(f"line {n:04d} " + "x" * 80 for n in range(60))  # three chunks
    with store.write() as s:
        rows = enqueue(session=s, text=text, files=[chart("a.png"), chart("b.png")])
    assert len(rows) == 3
    carriers = [r for r in rows if "attachments" in r.payload]
    assert carriers == [rows[-1]]
    assert rows[-1].payload["attachments"] == [
        {"id": 0, "filename": "a.png"},
        {"id": 1, "filename": "b.png"},
    ]
    with store.read() as s:
        shown = file_summaries(session=s, ids=[r.id or 0 for r in rows])
    assert list(shown) == [rows[-1].id]
    assert [f["filename"] for f in shown[rows[-1].id or 0]] == ["a.png", "b.png"]
    assert all(f["size"] == len(PNG) and f["kept"] for f in shown[rows[-1].id or 0])


def test_an_embed_image_may_name_its_attachment(store: Store) -> None:
    embed = {"title": "heartbeat", "image": {"url": "attachment://chart.png"}}
    with store.write() as s:
        [row] = enqueue(session=s, embeds=[embed], files=[chart()])
    assert row.payload["embeds"][0]["image"]["url"] == "attachment://chart.png"
    with pytest.raises(InvalidMessageError, match="names no attached file"), store.write() as s:
        enqueue(session=s, embeds=[embed], files=[chart("other.png")])


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ([chart(f"c{n}.png") for n in range(MAX_FILES + 1)], "at most 10 files"),
        ([chart("../etc/passwd")], "filename must be"),
        ([chart(""), chart()], "filename must be"),
        ([chart(), chart()], "used twice"),
        ([chart(data=b"")], "is empty"),
        ([Attachment("c.png", PNG, "not a type")], "MIME type"),
        ([chart(data=b"x" * (8 * 1024 * 1024 + 1))], "limit"),
        (["not a file"], "is not a file"),
    ],
)
def test_bad_files_are_refused_in_one_line_and_nothing_is_stored(
    store: Store, files: list[Attachment], needle: str
) -> None:
    with pytest.raises(InvalidMessageError, match=needle) as info, store.write() as s:
        enqueue(session=s, text="hello", files=files)
    assert "\n" not in str(info.value)
    with store.read() as s:
        assert list_messages(session=s) == []


def test_an_old_database_gains_the_files_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "harness.db"
    with ml.open_log(path) as store, store.write() as s:
        enqueue(session=s, text="from before files")
        s.connection().exec_driver_sql("DROP TABLE outbox_file")  # as an older Harness left it
    with ml.open_log(path) as store:
        with store.write() as s:
            enqueue(session=s, text="with a chart", files=[chart()])
        with store.read() as s:
            rows = list_messages(session=s)
            shown = file_summaries(session=s, ids=[r.id or 0 for r in rows])
    assert [r.payload["content"] for r in rows] == ["with a chart", "from before files"]
    assert [len(v) for v in shown.values()] == [1]


def config(fake: FakeDiscord, mode: str) -> DiscordConfig:
    fast: dict[str, Any] = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "poll_s": 0.1}
    if mode == "channel":
        return DiscordConfig(
            bot_token=SecretStr(fake.bot_token), channel_id="99", api_base=fake.api_base, **fast
        )
    return DiscordConfig(webhook_url=SecretStr(fake.webhook_url()), **fast)


@pytest.mark.parametrize("mode", ["channel", "webhook"])
async def test_files_are_uploaded_as_multipart(store: Store, mode: str) -> None:
    async with FakeDiscord() as fake:
        raw = Attachment("b.bin", b"\x00", "application/octet-stream")
        with store.write() as s:
            [row] = enqueue(session=s, text="with files", files=[chart("a.png"), raw])
            enqueue(session=s, text="after")
        # the first attempt is rate limited: the retry sends the files again
        fake.rate_limit_next(fake.channel_route("99") if mode == "channel" else "webhook:111", 0.2)
        assert await DeliveryWorker(store, config(fake, mode)).drain(20)
    assert [r.status for r in fake.requests] == [429, 200, 200]
    first, second = fake.messages
    assert first.content == "with files" and first.multipart
    assert [(f.id, f.filename, f.content_type, f.data) for f in first.files] == [
        (0, "a.png", "image/png", PNG),
        (1, "b.bin", "application/octet-stream", b"\x00"),
    ]
    assert (first.nonce is not None) == (mode == "channel")
    assert second.content == "after" and not second.multipart and second.files == ()
    with store.read() as s:
        assert all(not f["kept"] for f in file_summaries(session=s, ids=[row.id or 0])[row.id or 0])


async def test_a_message_whose_file_is_gone_is_dead_lettered(store: Store) -> None:
    async with FakeDiscord() as fake:
        with store.write() as s:
            [row] = enqueue(session=s, text="lost its chart", files=[chart()])
            s.connection().exec_driver_sql("UPDATE outbox_file SET data = NULL")
            enqueue(session=s, text="behind it")
        assert await DeliveryWorker(store, config(fake, "webhook")).drain(20)
    assert [m.content for m in fake.messages] == ["behind it"]
    with store.read() as s:
        assert count_by_state(session=s)["dead"] == 1
        [incident] = ml.list_incidents(session=s)
    assert f"outbox message {row.id}" in incident.summary and "missing" in incident.summary


async def test_post_send_takes_files_in_base64(store: Store) -> None:
    token = "test-api-token-0123456789"
    runner = await serve(create_app(store=store, token=token), port=0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    big = base64.b64encode(PNG * 20).decode()  # ~270 KB of base64: over the plain limit
    good = {
        "text": "chart",
        "files": [{"filename": "c.png", "data": big, "content_type": "image/png"}],
    }
    bad_cases = [
        ({"text": "x", "files": [{"filename": "c.png", "data": "!!"}]}, "not base64"),
        ({"text": "x", "files": [{"filename": "../c", "data": "AA=="}]}, "filename must be"),
        ({"text": "x", "files": [{"name": "c.png"}]}, "unknown key 'name'"),
        ({"text": "x", "files": "c.png"}, "files must be a list"),
        ({"text": "y" * (70 * 1024)}, "too large"),  # without files the limit is unchanged
    ]
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.post(f"{url}/send", data=json.dumps(good)) as r:
                assert r.status == 202, await r.text()
                [message_id] = (await r.json())["ids"]
            for body, needle in bad_cases:
                async with http.post(f"{url}/send", data=json.dumps(body)) as r:
                    error = (await r.json())["error"]
                    assert r.status in (400, 413) and needle in error, (r.status, error)
                    assert "\n" not in error
            async with http.get(f"{url}/messages") as r:
                listed = await r.text()
    finally:
        await runner.cleanup()
    [row] = json.loads(listed)["messages"]
    assert row["id"] == message_id and len(listed) < 4000  # name and size, not the bytes
    assert row["files"] == [
        {"filename": "c.png", "content_type": "image/png", "size": len(PNG) * 20, "kept": True}
    ]
