# ruff: noqa: F811 - the fake Discord fixture is imported by name, and used by name
"""A heartbeat queued with its chart survives ``kill -9`` of ``harness serve``: the real
daemon (a subprocess), a fake Discord (a subprocess) that refuses with 503 until the
daemon is dead; the daemon started again delivers the heartbeat with its PNG intact."""

from __future__ import annotations

import base64
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.charts.conftest import check_png
from tests.e2e.test_daemon import (
    Daemon,
    Fake,
    _kill_marked,
    fake,  # noqa: F401 - the fake Discord, a fixture used by name
    make_home,
    wait_for,
)

pytestmark = pytest.mark.slow

JOB = (
    "import time\n"
    "from harness.job import Reporter\n"
    "r = Reporter(); r.start(total_steps=1000, device='cpu')\n"
    "for i in range(1000):\n"
    "    r.step(i, loss=2.0 / (i + 1)); time.sleep(0.1 if i < 20 else 1.0)\n"
)


def _heartbeat_row(api: httpx.Client) -> dict[str, Any] | None:
    rows = api.get("/messages", timeout=30).json()["messages"]
    return next((m for m in rows if m["kind"] == "heartbeat" and m["files"]), None)


def test_a_heartbeat_with_its_chart_survives_kill_9(tmp_path: Path, fake: Fake) -> None:
    home, env, port = make_home(tmp_path, fake)
    first = Daemon(home, env, port).start()
    run_id = ""
    second: Daemon | None = None
    try:
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {first.token()}"},
        )
        spec = {
            "name": "steady",
            "command": [sys.executable, "-c", JOB],
            "device": "cpu",
            "watch": {"min_ram_free_gb": 0.05, "util_grace_s": 600, "stall_s": 120},
        }
        r = api.post("/runs", json={"spec": spec, "source": "test"}, timeout=60)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        wait_for(
            lambda: (api.get(f"/runs/{run_id}").json()["progress"].get("step") or 0) >= 10,
            30,
            "progress",
        )
        fake.config(fail_for=600)  # Discord is down: the heartbeat waits in the outbox
        beat = api.post("/heartbeat", timeout=60)
        assert beat.status_code == 200, beat.text
        row = wait_for(lambda: _heartbeat_row(api), 30, "the heartbeat in the outbox")
        [file] = row["files"]  # name, type and size: never the bytes
        assert file["filename"] == f"chart-{run_id}.png" and file["content_type"] == "image/png"
        assert set(file) == {"filename", "content_type", "size", "kept"} and file["kept"]
        wait_for(
            lambda: (h := _heartbeat_row(api)) and "503" in (h["last_error"] or ""),
            30,
            "a refused attempt",
        )
        api.close()
        first.stop(signal.SIGKILL)
        fake.config(fail_for=0)
        second = Daemon(home, env, port).start()

        def delivered() -> list[dict[str, Any]]:
            return [m for m in fake.messages() if m["files"]]

        [message] = wait_for(delivered, 60, "the heartbeat with its chart")
    finally:
        if second is not None:
            second.stop()
        elif first.proc is not None and first.proc.poll() is None:
            first.stop(signal.SIGKILL)
        if run_id:
            _kill_marked(run_id)
    assert "heartbeat" in message["embeds"][0]["title"]
    assert message["nonce"]  # the bot-token path: exactly once, files or not
    [got] = message["files"]
    data = base64.b64decode(got["data_b64"])
    assert got["filename"] == file["filename"] and len(data) == file["size"]
    check_png(data)
    assert message["embeds"][0]["image"]["url"] == f"attachment://{file['filename']}"
