"""The fake Discord as a separate process (how daemon tests use it) is driven over HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from mistakes import open_log
from sidecar import DeliveryWorker, DiscordConfig, enqueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.discord_server",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert line.startswith("fake discord listening on "), line
        yield line.split()[4]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0  # clean exit on SIGTERM


async def test_the_fake_in_its_own_process_records_and_misbehaves_on_request(
    fake_url: str, tmp_path: Path
) -> None:
    store = open_log(tmp_path / "harness.db")
    webhook = f"{fake_url}/api/webhooks/111/fake-webhook-token-abcdefghijklmnopqrstuvwxyz"
    conf = DiscordConfig(webhook_url=SecretStr(webhook), backoff_base_s=0.05, poll_s=0.2)
    async with aiohttp.ClientSession(fake_url) as http:
        async with http.post("/_fake/config", json={"refuse_next": {"status": 404}}) as r:
            assert r.status == 200
        with store.write() as s:
            for text in ("refused", "kept"):
                enqueue(session=s, text=text)

        assert await DeliveryWorker(store, conf).drain(timeout=10)

        async with http.get("/_fake/messages") as r:
            messages = await r.json()
        async with http.get("/_fake/requests") as r:
            statuses = [q["status"] for q in await r.json()]
    assert [m["content"] for m in messages] == ["kept"]
    assert statuses == [404, 200]
