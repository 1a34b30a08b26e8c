"""Charts through the service: a heartbeat and an end-of-run alert reach the fake Discord
with the run's PNG, over the webhook and the bot-token channel; the opt-out switch; a
failing renderer leaves the text to go alone."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from harness.core.spec import RunSpec
from harness.daemon.config import load_settings
from harness.daemon.service import Service, chart_name
from harness.runtime.chart import UTIL_FILE, ChartRenderer
from memory import Store
from sidecar import DeliveryWorker, file_summaries, list_messages
from tests.charts.conftest import add_run, check_png, discord
from tests.fakes.discord_server import FakeDiscord


def _service(
    store: Store,
    fake: FakeDiscord,
    mode: str = "channel",
    *,
    env: dict[str, str] | None = None,
    renderer: ChartRenderer | None = None,
) -> Service:
    settings = load_settings({"HARNESS_HOME": str(store.path.parent), **(env or {})})
    worker = DeliveryWorker(store, discord(fake, mode))
    return Service(settings, store, worker=worker, renderer=renderer, host_name="box")


@pytest.mark.parametrize("mode", ["webhook", "channel"])
async def test_a_heartbeat_carries_its_runs_chart(
    store: Store, fake: FakeDiscord, tmp_path: Path, mode: str
) -> None:
    run = add_run(store, tmp_path / "runs" / "echo-1")
    service = _service(store, fake, mode)
    try:
        await service.heartbeat()
        assert await service.worker.drain(30)
    finally:
        await service.stop()
    [message] = fake.messages
    assert message.multipart and message.embeds is not None
    [embed] = message.embeds
    assert "heartbeat" in embed["title"] and run.id in str(embed["fields"])
    [png] = message.files
    assert png.filename == chart_name(run.id) and png.content_type == "image/png"
    assert embed["image"]["url"] == f"attachment://{png.filename}"
    check_png(png.data)
    if mode == "channel":  # exactly-once still holds with files: the nonce travels along
        assert message.nonce is not None
    with store.read() as s:  # sent: the bytes are gone from the outbox, name and size stay
        [row] = list_messages(session=s)
        [kept] = file_summaries(session=s, ids=[row.id or 0])[row.id or 0]
    assert row.state == "sent" and kept["size"] == len(png.data) and kept["kept"] is False


async def test_a_heartbeat_waiting_out_an_outage_keeps_its_chart(
    store: Store, fake: FakeDiscord, tmp_path: Path
) -> None:
    add_run(store, tmp_path / "runs" / "echo-1")
    service = _service(store, fake, "webhook")
    try:
        await service.heartbeat()  # queued with its chart; nothing delivered yet
        fake.fail_for(1.0)  # 503s: retried with backoff, the files sent again each time
        assert await service.worker.drain(30)
    finally:
        await service.stop()
    assert any(r.status == 503 for r in fake.requests)
    [message] = fake.messages
    [png] = message.files
    check_png(png.data)


async def test_charts_can_be_switched_off(store: Store, fake: FakeDiscord, tmp_path: Path) -> None:
    add_run(store, tmp_path / "runs" / "echo-1")
    service = _service(store, fake, env={"HARNESS_HEARTBEAT__CHARTS": "false"})
    try:
        view = await service.heartbeat()
        assert await service.worker.drain(30)
    finally:
        await service.stop()
    [message] = fake.messages
    assert not message.multipart and message.files == ()
    assert message.embeds == [view.embed] and "image" not in view.embed


async def test_a_failing_renderer_sends_the_text_alone_and_says_so_once(
    store: Store, fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_run(store, tmp_path / "runs" / "echo-1")
    broken = ChartRenderer(command=[sys.executable, "-c", "import sys; sys.exit('no fonts')"])
    service = _service(store, fake, renderer=broken)
    try:
        with caplog.at_level(logging.WARNING, logger="harness.charts"):
            await service.heartbeat()
            await service.heartbeat()
        assert await service.worker.drain(30)
    finally:
        await service.stop()
    assert len(fake.messages) == 2  # both heartbeats, each without a chart
    assert all(m.files == () and "image" not in (m.embeds or [{}])[0] for m in fake.messages)
    said = [r.getMessage() for r in caplog.records if r.name == "harness.charts"]
    assert len(said) == 1 and "no fonts" in said[0]


async def test_an_end_of_run_alert_carries_the_chart(
    store: Store, fake: FakeDiscord, tmp_path: Path
) -> None:
    code = (
        "import sys, time\n"
        "from harness.job import Reporter\n"
        "r = Reporter(); r.start(total_steps=40, device='cpu')\n"
        "for i in range(40):\n"
        "    r.step(i, loss=2.0 / (i + 1)); time.sleep(0.02)\n"
        "time.sleep(0.6)\n"
        "print('RuntimeError: out of patience', file=sys.stderr); sys.exit(3)\n"
    )
    spec = RunSpec.model_validate(
        {
            "name": "crash",
            "command": [sys.executable, "-c", code],
            "device": "cpu",
            "watch": {"sample_every_s": 0.2, "min_ram_free_gb": 0.05, "util_grace_s": 600},
        }
    )
    service = _service(store, fake, "webhook")
    try:
        await service.start()  # the delivery worker runs, as in `harness run`
        run_id = await service.supervisor.launch(spec)
        run = await asyncio.wait_for(service.supervisor.wait(run_id), 60)
        assert run.status == "failed"
        assert await service.flush(30)
    finally:
        await service.stop()
    [alert] = [m for m in fake.messages if "failed: exit code 3" in (m.content or "")]
    assert "out of patience" in (alert.content or "")
    [png] = alert.files
    assert png.filename == chart_name(run_id)
    check_png(png.data)
    util = (Path(run.run_dir) / UTIL_FILE).read_text().splitlines()
    assert util and "cpu" in json.loads(util[0])  # the watch loop recorded the series


async def test_a_succeeded_run_is_said_at_once_with_its_chart(
    store: Store, fake: FakeDiscord, tmp_path: Path
) -> None:
    code = (
        "from harness.job import Reporter\n"
        "r = Reporter(); r.start(total_steps=20, device='cpu')\n"
        "for i in range(20):\n"
        "    r.step(i, loss=2.0 / (i + 1))\n"
        "r.end(loss=0.1)\n"
    )
    spec = RunSpec.model_validate(
        {
            "name": "fine",
            "command": [sys.executable, "-c", code],
            "device": "cpu",
            "watch": {"sample_every_s": 0.2, "min_ram_free_gb": 0.05, "util_grace_s": 600},
        }
    )
    service = _service(store, fake, "webhook")
    try:
        await service.start()
        run_id = await service.supervisor.launch(spec)
        run = await asyncio.wait_for(service.supervisor.wait(run_id), 60)
        assert run.status == "succeeded"
        assert await service.flush(30)
    finally:
        await service.stop()
    [said] = [m for m in fake.messages if "fine: succeeded" in (m.content or "")]
    assert (said.content or "").startswith(f"fine: succeeded: no gates declared [{run_id}]")
    [png] = said.files
    assert png.filename == chart_name(run_id)
    check_png(png.data)
