"""The briefing: what it names, in which section and format, and "since the last brief".

The failing checklist item is real, not patched: the brief is given a spec whose
``watch.min_ram_free_gb`` no machine can meet, so ``preflight_checks`` reads the real
free RAM and fails the RAM headroom item with its numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import mistakes as ml
from harness.core.spec import RunSpec
from harness.daemon.api import add_memory_routes
from harness.daemon.brief import (
    brief_sections,
    build_brief,
    default_check_spec,
    render_hook,
    render_json,
    render_text,
)
from memory import Run, Store, add_note, list_notes, record_heartbeat
from sidecar import create_app, serve

TOKEN = "test-api-token-0123456789"
NO_RAM = RunSpec.model_validate(
    {"name": "check", "command": ["python"], "watch": {"min_ram_free_gb": 1_000_000}}
)
ANY_RAM = RunSpec.model_validate(
    {"name": "check", "command": ["python"], "watch": {"min_ram_free_gb": 0}}
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return ml.open_log(tmp_path / "harness.db")


def seed(store: Store, now: float) -> None:
    """An active run with a heartbeat, a finished run, an order, an inbox note, a note."""
    with store.write() as s:
        s.add(
            Run(
                id="echo-20261122-aaaa",
                name="echo",
                status="running",
                created_at=now - 600,
                started_at=now - 590,
                progress={"step": 120, "total_steps": 600, "metrics": {"loss": 0.25}},
                progress_at=now - 5,
            )
        )
        s.add(
            Run(
                id="shift-20261121-bbbb",
                name="shift",
                status="failed",
                created_at=now - 7200,
                started_at=now - 7100,
                ended_at=now - 3600,
                summary="gate avg_bit_acc >= 0.93 failed: 0.41",
            )
        )
        record_heartbeat(
            session=s,
            text="heartbeat 02:00:00Z on box [ok]\necho ...",
            health="ok",
            payload={},
            ts=now - 60,
        )
        add_note(session=s, text="never launch two runs at once", kind="order")
        add_note(session=s, text="please try lr 1e-4", kind="inbox", author="alice")
        add_note(session=s, text="lr 3e-4 diverged at step 80")


def record(store: Store, summary: str, ts: float) -> None:
    with store.write() as s:
        ml.record_incident(
            session=s,
            rule="utilisation",
            summary=summary,
            run_id="echo-20261122-aaaa",
            mistake_id="M-015",
            severity="abort",
            ts=ts,
        )


def test_brief_names_everything_in_all_three_formats(store: Store) -> None:
    now = time.time()
    seed(store, now)
    record(store, "CPU 6% over 30 s, threshold 80%", now - 100)
    brief = build_brief(store, now=now, spec=NO_RAM)

    text = render_text(brief)
    # what an agent needs first comes first
    order_at, checks_at = text.index("never launch two runs at once"), text.index("FAIL RAM")
    assert order_at < checks_at < text.index("please try lr 1e-4") < text.index("echo [")
    assert "RAM headroom (M-030)" in text and "minimum 1e+06 GB" in text
    assert "from alice" in text and "harness inbox" in text
    assert "echo [echo-20261122-aaaa] running: step 120/600 (20%)" in text
    assert "last heartbeat" in text and "[ok]" in text
    assert "CPU 6% over 30 s" in text and "M-015" in text
    assert "shift-20261121-bbbb failed" in text and "0.41" in text
    assert "lr 3e-4 diverged" in text

    data = json.loads(json.dumps(render_json(brief), allow_nan=False))
    assert [o["text"] for o in data["standing_orders"]] == ["never launch two runs at once"]
    assert [c["name"] for c in data["failing_checks"]] == ["RAM headroom"]
    assert data["failing_checks"][0]["mistake_ids"] == ["M-030"]
    assert data["failing_checks"][0]["passed"] is False
    assert [(n["author"], n["text"]) for n in data["inbox"]] == [("alice", "please try lr 1e-4")]
    assert [r["id"] for r in data["active_runs"]] == ["echo-20261122-aaaa"]
    assert data["active_runs"][0]["incidents"] == 1
    assert data["last_heartbeat"]["health"] == "ok"
    assert [i["summary"] for i in data["incidents"]] == ["CPU 6% over 30 s, threshold 80%"]
    assert [r["id"] for r in data["recent_runs"]] == ["shift-20261121-bbbb"]

    hook = render_hook(brief)
    assert set(hook) == {"hookSpecificOutput"}
    assert hook["hookSpecificOutput"] == {
        "hookEventName": "SessionStart",
        "additionalContext": text,
    }

    sections = brief_sections(brief)
    assert list(sections)[:3] == ["Standing orders", "Failing checks", "Unread inbox"]
    assert sections["Failing checks"][0].startswith("FAIL RAM headroom")


def test_brief_does_not_mark_the_inbox_read(store: Store) -> None:
    now = time.time()
    seed(store, now)
    build_brief(store, now=now, spec=ANY_RAM)
    second = build_brief(store, now=now + 1, spec=ANY_RAM)
    assert [n.text for n in second.inbox] == ["please try lr 1e-4"]
    with store.read() as s:
        assert all(n.read_at is None for n in list_notes(session=s, kind="inbox"))


def test_nothing_failing_says_so(store: Store) -> None:
    brief = build_brief(store, spec=ANY_RAM)
    assert brief.failing_checks == []
    text = render_text(brief)
    assert "== Failing checks (0) ==\n  none" in text
    assert "== Active runs (0) ==\n  none" in text
    assert default_check_spec().watch.min_ram_free_gb > 0  # the CLI's real default


def test_incidents_are_shown_once_and_no_mark_does_not_advance(store: Store) -> None:
    t0 = time.time()
    record(store, "first abort", t0 - 50)
    first = build_brief(store, now=t0, spec=ANY_RAM)
    assert first.previous_brief_at is None
    assert [i.summary for i in first.incidents] == ["first abort"]

    record(store, "second abort", t0 + 10)
    peek = build_brief(store, now=t0 + 20, spec=ANY_RAM, mark=False)
    assert [i.summary for i in peek.incidents] == ["second abort"]
    again = build_brief(store, now=t0 + 30, spec=ANY_RAM)  # the peek did not move the mark
    assert again.previous_brief_at == t0
    assert [i.summary for i in again.incidents] == ["second abort"]
    assert "first abort" not in render_text(again)

    quiet = build_brief(store, now=t0 + 40, spec=ANY_RAM)
    assert quiet.incidents == [] and quiet.incident_count == 0
    assert "== Incidents since the last brief (0) ==\n  none" in render_text(quiet)


def test_an_incident_recorded_during_a_brief_shows_in_the_next(store: Store) -> None:
    t0 = time.time()
    record(store, "late", t0 + 5)  # timestamped after the brief's `now`
    first = build_brief(store, now=t0, spec=ANY_RAM)
    assert first.incidents == []
    second = build_brief(store, now=t0 + 10, spec=ANY_RAM)
    assert [i.summary for i in second.incidents] == ["late"]


def test_nan_in_a_progress_snapshot_still_gives_strict_json(store: Store) -> None:
    with store.write() as s:
        s.add(
            Run(
                id="nan-run",
                name="nan",
                status="running",
                progress={"step": 80, "metrics": {"loss": float("nan")}},
                progress_at=time.time(),
            )
        )
    data = render_json(build_brief(store, spec=ANY_RAM))
    text = json.dumps(data, allow_nan=False)
    assert '"loss": "nan"' in text


# -- HTTP: GET /inbox and GET /brief --------------------------------------------------------


@pytest.fixture
async def base_url(store: Store) -> AsyncIterator[str]:
    app = create_app(store=store, token=TOKEN)
    add_memory_routes(app)
    runner = await serve(app, port=0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def get(base_url: str, path: str, *, token: str = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(base_url + path, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_get_inbox_returns_unread_notes_once(store: Store, base_url: str) -> None:
    with store.write() as s:
        add_note(session=s, text="is it done yet?", kind="inbox", author="discord:42")
        add_note(session=s, text="a terminal note, not for the inbox")
    status, body = await get(base_url, "/inbox")
    assert status == 200
    assert [(n["author"], n["text"]) for n in body["notes"]] == [("discord:42", "is it done yet?")]
    assert body["notes"][0]["read_at"] is None  # as it was when read
    status, body = await get(base_url, "/inbox")
    assert (status, body) == (200, {"notes": []})
    status, _ = await get(base_url, "/inbox", token="wrong-token-0123456789")
    assert status == 401


async def test_get_brief_in_each_format_without_moving_the_mark(
    store: Store, base_url: str
) -> None:
    now = time.time()
    seed(store, now)
    record(store, "CPU 6% over 30 s, threshold 80%", now - 100)
    status, data = await get(base_url, "/brief?format=json")
    assert status == 200
    assert [o["text"] for o in data["standing_orders"]] == ["never launch two runs at once"]
    assert [r["id"] for r in data["active_runs"]] == ["echo-20261122-aaaa"]
    assert [i["summary"] for i in data["incidents"]] == ["CPU 6% over 30 s, threshold 80%"]
    status, data = await get(base_url, "/brief?format=text")
    assert status == 200 and "please try lr 1e-4" in data["text"]
    assert data["sections"]["Unread inbox"][0].endswith("from alice: please try lr 1e-4")
    status, data = await get(base_url, "/brief?format=hook")
    assert data["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    # no mark moved: the incident is still "since the last brief" for the terminal
    assert [i.summary for i in build_brief(store, spec=ANY_RAM).incidents] == [
        "CPU 6% over 30 s, threshold 80%"
    ]
    status, data = await get(base_url, "/brief?format=xml")
    assert status == 400 and "format" in data["error"]
