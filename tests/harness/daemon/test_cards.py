"""A diagnosis card reaches the outbox as one Discord embed, kind "alert" (the daemon's
card channel), and is printed at the terminal; the plain-text alerts are unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import mistakes as ml
from harness.daemon.config import load_settings
from harness.daemon.service import Service
from sidecar import list_messages


async def test_a_card_is_queued_as_an_embed_alert(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = ml.open_log(state / "harness.db")
    echoed: list[tuple[str, bool]] = []
    settings = load_settings({"HARNESS_HOME": str(state)})
    service = Service(settings, store, echo=lambda text, alert: echoed.append((text, alert)))
    try:
        embed = {"title": "echo: the loss diverged at step 612", "color": 0xE74C3C}
        service.card("echo: diagnosis: the loss diverged at step 612", embed)
        service.notify("echo: plain alert", True)
        for _ in range(100):
            with store.read() as s:
                rows = list_messages(session=s)
            if len(rows) == 2:
                break
            await asyncio.sleep(0.02)
        assert [r.kind for r in rows] == ["alert", "alert"]
        card, plain = sorted(rows, key=lambda r: "embeds" not in r.payload)
        assert card.payload.get("embeds") == [embed] and not card.payload.get("content")
        assert "embeds" not in plain.payload and "plain alert" in str(plain.payload)
        assert ("echo: diagnosis: the loss diverged at step 612", True) in echoed
    finally:
        await service.stop()
        store.close()
