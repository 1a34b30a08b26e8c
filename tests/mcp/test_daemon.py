"""`harness mcp` steering a real `harness serve`: the echo preset started, watched, steered
and aborted through the MCP tools, as a coding agent would."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import pytest
from mcp import ClientSession

from tests.mcp.conftest import Home, data_of, text_of

pytestmark = pytest.mark.slow

# Far more steps than the test lets it run: the run is still going when it is aborted.
LONG = {"steps": 100000, "batch": 64, "eval_every": 0}


async def _status(s: ClientSession, run_id: str) -> dict[str, Any]:
    [run] = data_of(await s.call_tool("status", {"run": run_id}))["runs"]
    return dict(run)


async def _until(s: ClientSession, run_id: str, done: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        run = await _status(s, run_id)
        if done(run):
            return run
        assert time.monotonic() < deadline, f"{what}: still {run['status']}"
        await asyncio.sleep(0.3)


async def test_start_echo_watch_steer_and_abort_it(
    home: Home, daemon: subprocess.Popen[bytes]
) -> None:
    async with home.mcp() as s:
        started = data_of(await s.call_tool("start_run", {"preset": "echo", "overrides": LONG}))
        run_id = started["id"]
        running = await _until(s, run_id, lambda r: "step " in r["line"], "a first step")
        active = data_of(await s.call_tool("status", {}))["runs"]
        steered = data_of(
            await s.call_tool("set_controls", {"run": run_id, "controls": {"lr": "0.0005"}})
        )
        bad = await s.call_tool("set_controls", {"run": run_id, "controls": {"lr": "abc"}})
        aborting = data_of(
            await s.call_tool("abort_run", {"run": run_id[:8], "reason": "agent: loss is flat"})
        )
        aborted = await _until(s, run_id, lambda r: r["status"] == "aborted", "aborted")
        again = await s.call_tool("abort_run", {"run": run_id})
        listed = data_of(await s.call_tool("list_runs", {"limit": 5}))["runs"]
        diagnosis = data_of(await s.call_tool("diagnose", {"run": run_id}))
        incidents = data_of(await s.call_tool("list_incidents", {"run": run_id}))["incidents"]

    assert started["name"] == "echo" and started["status"] not in ("failed", "aborted")
    assert running["status"] == "running" and running["line"].startswith("echo  running  step ")
    assert [r["id"] for r in active] == [run_id]
    assert steered == {"id": run_id, "controls": {"lr": 0.0005}}
    assert bad.is_error and text_of(bad) == "lr: expected a positive number, got 'abc'"
    assert aborting == {"id": run_id, "status": "aborting", "reason": "agent: loss is flat"}
    assert "agent: loss is flat" in aborted["summary"]
    assert aborted["controls"]["lr"] == 0.0005
    assert again.is_error and text_of(again) == f"run {run_id} is already aborted; nothing to abort"
    assert [r["id"] for r in listed] == [run_id]
    assert diagnosis["run"] == run_id and diagnosis["lines"] > 0
    assert diagnosis["verdict"] in ("healthy", "unhealthy")
    assert [(i["rule"], i["summary"]) for i in incidents] == [
        ("user_abort", "abort requested by mcp: agent: loss is flat")
    ]

    # The daemon stopped: what changes a run says so in one line; the store still answers.
    daemon.terminate()
    daemon.wait(timeout=30)
    async with home.mcp() as s:
        down = await s.call_tool("start_run", {"preset": "echo"})
        after = await _status(s, run_id)
    assert down.is_error
    assert text_of(down) == (
        f"no harness daemon on 127.0.0.1:{home.port}: start it with `harness serve`"
    )
    assert after["status"] == "aborted"
