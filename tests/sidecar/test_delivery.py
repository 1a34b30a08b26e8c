"""Delivery to a local fake Discord over real sockets, from a real SQLite outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from memory import Store
from mistakes import list_incidents, open_log
from sidecar import (
    DeliveryWorker,
    DiscordClient,
    DiscordConfig,
    RateLimitedError,
    claim_next,
    count_by_state,
    create_app,
    enqueue,
    list_messages,
    reset_stuck,
    serve,
)
from tests.fakes.discord_server import FakeDiscord

CHANNEL = "123456789"
TOKEN = "test-api-token-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_log(tmp_path / "harness.db")


def config(fake: FakeDiscord, mode: str = "channel", **overrides: Any) -> DiscordConfig:
    settings: dict[str, Any] = {
        "api_base": fake.api_base,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.3,
        "poll_s": 0.2,
        **overrides,
    }
    if mode == "channel":
        return DiscordConfig(bot_token=SecretStr(fake.bot_token), channel_id=CHANNEL, **settings)
    return DiscordConfig(webhook_url=SecretStr(fake.webhook_url()), **settings)


def queue(store: Store, *texts: str) -> None:
    with store.write() as s:
        for text in texts:
            enqueue(session=s, text=text)


def counts(store: Store) -> dict[str, int]:
    with store.read() as s:
        return count_by_state(session=s)


async def wait_sent(store: Store, n: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while (await asyncio.to_thread(counts, store))["sent"] < n:
            await asyncio.sleep(0.02)


def contents(fake: FakeDiscord) -> list[str | None]:
    return [m.content for m in fake.messages]


@pytest.mark.parametrize("mode", ["channel", "webhook"])
async def test_200_messages_sent_through_the_api_arrive_once_in_order(
    mode: str, fake: FakeDiscord, store: Store
) -> None:
    # poll_s is huge: only the wake-up from POST /send can get these out within the timeout
    worker = DeliveryWorker(store, config(fake, mode, poll_s=600.0))
    runner = await serve(create_app(store=store, token=TOKEN, wake=worker.wake), port=0)
    port = runner.addresses[0][1]
    task = asyncio.create_task(worker.run())
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            for i in range(200):
                async with http.post("/send", json={"text": f"message {i}"}) as response:
                    assert response.status == 202
        await wait_sent(store, 200)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()

    assert contents(fake) == [f"message {i}" for i in range(200)]
    assert fake.violations == []
    # "@everyone" in a job's text must not ping anybody
    assert all(m.allowed_mentions == {"parse": []} for m in fake.messages)
    with store.read() as s:
        rows = list_messages(session=s, limit=1000)
    assert {r.discord_message_id for r in rows} == {m.id for m in fake.messages}
    if mode == "channel":
        assert [m.nonce for m in fake.messages] == [r.nonce for r in reversed(rows)]
    else:
        assert all(m.nonce is None for m in fake.messages)  # webhooks take no nonce


async def test_a_429_closes_the_route_for_retry_after_seconds(
    fake: FakeDiscord, store: Store
) -> None:
    fake.rate_limit_next(fake.channel_route(CHANNEL), retry_after=0.6)
    queue(store, "a", "b", "c")

    assert await DeliveryWorker(store, config(fake)).drain(timeout=10)

    assert fake.violations == []  # nothing reached the route while it was closed
    assert [r.status for r in fake.requests] == [429, 200, 200, 200]
    assert fake.requests[1].t - fake.requests[0].t >= 0.6
    assert contents(fake) == ["a", "b", "c"]


async def test_an_empty_rate_limit_bucket_is_waited_out_before_asking(
    fake: FakeDiscord, store: Store
) -> None:
    fake.set_bucket(limit=3, window=0.3)  # X-RateLimit-Remaining reaches 0 every 3 requests
    queue(store, *[f"m{i}" for i in range(9)])

    assert await DeliveryWorker(store, config(fake)).drain(timeout=10)

    assert fake.violations == []
    assert {r.status for r in fake.requests} == {200}
    assert contents(fake) == [f"m{i}" for i in range(9)]


async def test_retry_after_in_the_header_alone_is_honoured() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "2"}, text="slow down")

    conf = DiscordConfig(bot_token=SecretStr("t" * 30), channel_id="1")
    async with DiscordClient(conf, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RateLimitedError) as info:
            await client.send({"content": "x"}, nonce="n")
    assert info.value.retry_after == 2.0


async def test_an_outage_of_503s_is_ridden_out_without_loss_duplicate_or_reorder(
    fake: FakeDiscord, store: Store
) -> None:
    fake.fail_for(2.0)
    queue(store, *[f"before {i}" for i in range(10)])
    worker = DeliveryWorker(store, config(fake))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # in the middle of the outage
        queue(store, *[f"during {i}" for i in range(10)])
        worker.wake()
        await wait_sent(store, 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert sum(r.status == 503 for r in fake.requests) >= 2  # the outage was really hit
    expected = [f"before {i}" for i in range(10)] + [f"during {i}" for i in range(10)]
    assert contents(fake) == expected
    with store.read() as s:
        first = list_messages(session=s, limit=100)[-1]
    assert first.attempts > 1 and first.state == "sent"


async def test_after_a_crash_mid_send_a_channel_message_is_not_duplicated(
    fake: FakeDiscord, store: Store
) -> None:
    conf = config(fake)
    queue(store, "m0", "m1", "m2")
    # The old process claimed m0 and its request reached Discord, then the process died.
    with store.write() as s:
        claimed = claim_next(session=s)
    assert claimed is not None
    async with DiscordClient(conf) as client:
        await client.send(claimed.payload, nonce=claimed.nonce)
    # A new process starts: reset stuck rows, build a new worker.
    with store.write() as s:
        assert reset_stuck(session=s) == 1

    assert await DeliveryWorker(store, conf).drain(timeout=10)

    assert contents(fake) == ["m0", "m1", "m2"]  # m0 was re-posted but Discord dedup'ed it
    assert [r.status for r in fake.requests] == [200] * 4
    with store.read() as s:
        m0 = list_messages(session=s, limit=10)[-1]
    assert m0.state == "sent" and m0.discord_message_id == fake.messages[0].id


async def test_after_a_crash_mid_send_a_webhook_message_may_arrive_twice_but_only_that_one(
    fake: FakeDiscord, store: Store
) -> None:
    conf = config(fake, "webhook")
    queue(store, "m0", "m1", "m2")
    with store.write() as s:
        claimed = claim_next(session=s)
    assert claimed is not None
    async with DiscordClient(conf) as client:
        await client.send(claimed.payload, nonce=claimed.nonce)

    assert await DeliveryWorker(store, conf).drain(timeout=10)

    assert contents(fake) == ["m0", "m0", "m1", "m2"]  # the documented bound: one duplicate


async def test_a_404_dead_letters_the_message_records_an_incident_and_the_rest_go_out(
    fake: FakeDiscord, store: Store
) -> None:
    fake.refuse_next(1, status=404, code=10003, message="Unknown Channel")
    queue(store, "lost", "next", "last")

    assert await DeliveryWorker(store, config(fake)).drain(timeout=10)

    assert contents(fake) == ["next", "last"]
    with store.read() as s:
        rows = {m.payload["content"]: m for m in list_messages(session=s)}
        incidents = list_incidents(session=s, rule="delivery")
    assert rows["lost"].state == "dead"
    assert "404" in (rows["lost"].last_error or "")
    assert (rows["next"].state, rows["last"].state) == ("sent", "sent")
    [incident] = incidents
    assert incident.severity == "error"
    assert "404" in incident.summary and "Unknown Channel" in incident.summary
    assert incident.evidence["status"] == 404
    assert incident.evidence["code"] == 10003
    assert incident.evidence["outbox_id"] == rows["lost"].id


async def test_a_wrong_channel_is_dead_lettered_and_no_secret_shows_anywhere(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.unknown_channels.add(CHANNEL)
    channel = config(fake)
    hook = config(fake, "webhook")
    queue(store, "to nowhere")
    worker = DeliveryWorker(store, channel)

    assert await worker.drain(timeout=10)
    fake.unknown_channels.clear()
    queue(store, "via webhook")
    assert await DeliveryWorker(store, hook).drain(timeout=10)

    assert contents(fake) == ["via webhook"]
    with store.read() as s:
        rows = list_messages(session=s)
        [incident] = list_incidents(session=s, rule="delivery")
    assert "Unknown Channel" in incident.summary
    visible = " ".join(
        [caplog.text, repr(channel), repr(hook), repr(worker), str(incident.model_dump())]
        + [str(r.model_dump()) for r in rows]
    )
    assert "outbox message" in caplog.text  # the dead-lettering was logged...
    assert fake.bot_token not in visible  # ...without the bot token
    assert fake.webhook_token not in visible  # httpx logs the URL: it is redacted


async def test_without_discord_the_worker_does_not_run_and_messages_stay_listed(
    store: Store,
) -> None:
    queue(store, "kept")
    worker = DeliveryWorker(store, DiscordConfig())

    await asyncio.wait_for(worker.run(), timeout=5)  # returns at once

    with store.read() as s:
        assert [(m.payload["content"], m.state) for m in list_messages(session=s)] == [
            ("kept", "pending")
        ]


async def test_a_refused_token_pauses_delivery_instead_of_losing_the_outbox(
    fake: FakeDiscord, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sidecar._worker as worker_module

    monkeypatch.setattr(worker_module, "AUTH_RETRY_S", 0.3)
    fake.refuse_next(3, status=401, code=0, message="401: Unauthorized")
    queue(store, "first", "second")

    assert await DeliveryWorker(store, config(fake)).drain(timeout=15)

    assert contents(fake) == ["first", "second"]  # nothing dead-lettered, order kept
    with store.read() as s:
        assert {m.state for m in list_messages(session=s)} == {"sent"}
        incidents = list_incidents(session=s, rule="delivery")
    [incident] = incidents  # said once, not once per attempt
    assert "401" in incident.summary and "retried" in incident.summary
