"""``harness note/notes/orders/inbox/brief`` in-process: output, exit codes, one-line errors.

For the failing checklist item the RAM probe is replaced at the one place the supervisor
reads it (``harness.runtime.preflight.read_ram``): the CLI has no spec argument, and this is
the OS boundary the style guide says tests may replace.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import mistakes as ml
from harness.cli.main import main
from harness.runtime import preflight as _preflight
from harness.runtime.probes import RamSample
from memory import DB_NAME, Run, add_note, record_heartbeat

GIB = 1024**3


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tell(home: Path, text: str, author: str = "discord:alice") -> None:
    """What Discord's /tell does: an inbox note in the store."""
    with ml.open_log(home / DB_NAME) as store, store.write() as s:
        add_note(session=s, text=text, kind="inbox", author=author)


def test_notes_and_orders_round_trip(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "note", "add", "lr", "3e-4", "diverged")
    assert code == 0 and "note #1 saved" in out
    code, out, _ = run(capsys, "orders", "add", "never run two jobs at once")
    assert code == 0 and "standing order #2 saved" in out
    code, out, _ = run(capsys, "notes")
    assert code == 0 and "#1 " in out and "lr 3e-4 diverged" in out and "two jobs" not in out
    code, out, _ = run(capsys, "notes", "--json")
    assert [n["text"] for n in json.loads(out)] == ["lr 3e-4 diverged"]
    code, out, _ = run(capsys, "orders", "list", "--json")
    assert [(o["id"], o["kind"]) for o in json.loads(out)] == [(2, "order")]
    code, out, _ = run(capsys, "orders", "remove", "2")
    assert code == 0 and "removed standing order #2" in out
    code, out, _ = run(capsys, "orders", "list")
    assert code == 0 and "no standing orders" in out


def test_errors_are_one_line_with_the_right_exit_code(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "orders", "remove", "42")
    assert code == 1 and err.count("\n") == 1 and "no standing order #42" in err
    run(capsys, "note", "add", "a note, not an order")
    code, _, err = run(capsys, "orders", "remove", "1")  # exists, but is not an order
    assert code == 1 and "no standing order #1" in err
    code, out, err = run(capsys, "note", "add", "   ")
    assert code == 2 and err.count("\n") == 1 and "needs some text" in err and out == ""
    code, _, err = run(capsys, "orders", "add", "x" * 5000)
    assert code == 2 and "limited to 4000 characters" in err
    code, _, err = run(capsys, "notes", "--limit", "0")
    assert code == 2 and "--limit" in err
    code, out, _ = run(capsys, "orders", "list", "--json")
    assert json.loads(out) == []


def test_inbox_shows_unread_once_and_all_shows_it_again(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inbox")
    assert code == 0 and "nothing unread" in out
    tell(home, "stop at 10k steps please")
    code, out, _ = run(capsys, "inbox")
    assert code == 0 and "from discord:alice: stop at 10k steps please" in out
    code, out, _ = run(capsys, "inbox")
    assert code == 0 and "stop at 10k" not in out and "nothing unread" in out
    code, out, _ = run(capsys, "inbox", "--all")
    assert code == 0 and "stop at 10k steps please" in out and "(read " in out
    tell(home, "second message")
    code, out, _ = run(capsys, "inbox", "--json")
    notes = json.loads(out)
    assert [n["text"] for n in notes] == ["second message"] and notes[0]["read_at"] is None
    code, out, _ = run(capsys, "inbox", "--json")
    assert json.loads(out) == []


def seed_run(home: Path) -> None:
    now = time.time()
    with ml.open_log(home / DB_NAME) as store, store.write() as s:
        s.add(
            Run(
                id="echo-20261122-aaaa",
                name="echo",
                status="running",
                created_at=now - 300,
                started_at=now - 290,
                progress={"step": 50, "total_steps": 200, "metrics": {"loss": 0.5}},
                progress_at=now - 2,
            )
        )
        record_heartbeat(session=s, text="heartbeat [ok]", health="ok", payload={}, ts=now - 30)
        add_note(session=s, text="always checkpoint before aborting", kind="order")
        ml.record_incident(
            session=s,
            rule="ram_headroom",
            summary="RAM 1.2 GB free while running, minimum 4 GB",
            run_id="echo-20261122-aaaa",
            mistake_id="M-030",
            severity="warn",
            ts=now - 10,
        )
    tell(home, "how is echo doing?")


@pytest.fixture
def low_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    half = GIB // 2
    sample = RamSample(half, half, None, None, 8 * GIB)
    monkeypatch.setattr(_preflight, "read_ram", lambda: sample)


def test_brief_text_json_and_hook(
    home: Path, capsys: pytest.CaptureFixture[str], low_ram: None
) -> None:
    seed_run(home)
    code, text, _ = run(capsys, "brief", "--no-mark")
    assert code == 0
    for expected in (
        "always checkpoint before aborting",
        "FAIL RAM headroom (M-030): RAM 0.5 GB free before launch",
        "from discord:alice: how is echo doing?",
        "echo [echo-20261122-aaaa] running: step 50/200 (25%)",
        "last heartbeat",
        "RAM 1.2 GB free while running",
    ):
        assert expected in text, expected
    assert text.index("always checkpoint") < text.index("FAIL RAM") < text.index("echo [")

    code, out, _ = run(capsys, "brief", "--format", "json", "--no-mark")
    data = json.loads(out)
    assert [o["text"] for o in data["standing_orders"]] == ["always checkpoint before aborting"]
    assert [c["name"] for c in data["failing_checks"]] == ["RAM headroom"]
    assert [n["text"] for n in data["inbox"]] == ["how is echo doing?"]
    assert [r["id"] for r in data["active_runs"]] == ["echo-20261122-aaaa"]
    assert [i["rule"] for i in data["incidents"]] == ["ram_headroom"]

    code, out, _ = run(capsys, "brief", "--format", "hook")
    hook = json.loads(out)
    assert list(hook) == ["hookSpecificOutput"]
    assert list(hook["hookSpecificOutput"]) == ["hookEventName", "additionalContext"]
    assert hook["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    context = hook["hookSpecificOutput"]["additionalContext"]
    assert "always checkpoint before aborting" in context and "FAIL RAM headroom" in context
    assert "RAM 1.2 GB free while running" in context

    # the hook brief moved the mark: the incident is not repeated, the inbox still unread
    code, text, _ = run(capsys, "brief")
    assert "RAM 1.2 GB free while running" not in text
    assert "Incidents since the last brief (0)" in text
    assert "how is echo doing?" in text
    run(capsys, "inbox")
    code, text, _ = run(capsys, "brief")
    assert "how is echo doing?" not in text and "Unread inbox (0)" in text


def test_brief_is_registered_and_bad_format_is_usage(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["brief", "--format", "xml"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
