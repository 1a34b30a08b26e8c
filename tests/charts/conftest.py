"""Fixtures for the chart tests: a store, a fake Discord, a run with metrics and a
utilisation series in its run dir, and a PNG checker."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

import mistakes as ml
from harness.runtime.chart import UTIL_FILE, UtilLog
from memory import Run, Store
from sidecar import DiscordConfig
from tests.fakes.discord_server import FakeDiscord

CHANNEL = "424242"
MAX_CHART_BYTES = 200 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return ml.open_log(tmp_path / "state" / "harness.db")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def discord(fake: FakeDiscord, mode: str) -> DiscordConfig:
    fast: dict[str, Any] = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "poll_s": 0.1}
    if mode == "channel":
        return DiscordConfig(
            bot_token=SecretStr(fake.bot_token), channel_id=CHANNEL, api_base=fake.api_base, **fast
        )
    return DiscordConfig(webhook_url=SecretStr(fake.webhook_url()), **fast)


def write_run_dir(run_dir: Path, *, steps: int = 300, start: float | None = None) -> float:
    """metrics.jsonl (loss falling, acc rising, one garbage line) and util.jsonl."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - steps if start is None else start
    with (run_dir / "metrics.jsonl").open("w") as f:
        f.write(json.dumps({"event": "start", "total_steps": steps, "t": t0}) + "\n")
        f.write("not json\n")
        for s in range(steps):
            rec = {"step": s, "loss": 2 * math.exp(-s / 80), "acc": 1 - math.exp(-s / 60)}
            f.write(json.dumps({**rec, "t": t0 + s}) + "\n")
    log = UtilLog(run_dir / UTIL_FILE, every_s=5)
    for i in range(0, steps, 5):
        log.add(t0 + i, 0.5, {"0": 0.9 if i < steps / 2 else 0.2})
    return t0


def add_run(store: Store, run_dir: Path, *, run_id: str = "echo-20260101-000000-abcd") -> Run:
    """An active run row whose run dir holds a chart's worth of data, and an incident."""
    t0 = write_run_dir(run_dir)
    row = Run(
        id=run_id,
        name="echo",
        status="running",
        run_dir=str(run_dir),
        spec={"name": "echo", "device": "cuda:0", "gates": {"acc": ">= 0.5"}},
        progress={"step": 299, "total_steps": 300, "device": "cuda:0"},
        started_at=t0,
        progress_at=time.time(),
    )
    with store.write() as s:
        s.add(row)
        ml.record_incident(
            session=s,
            run_id=run_id,
            rule="utilisation",
            severity="warn",
            summary="GPU 0 at 20 %",
            evidence={},
            action="warned",
            ts=t0 + 150,
        )
    with store.read() as s:
        got = s.get(Run, run_id)
        assert got is not None
        return got


def check_png(data: bytes) -> tuple[int, int]:
    """A valid PNG of a sane size, under 200 KB; its (width, height)."""
    assert len(data) < MAX_CHART_BYTES, len(data)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.verify()
    assert 300 <= width <= 2000 and 200 <= height <= 2000, (width, height)
    return width, height
