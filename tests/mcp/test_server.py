"""`harness mcp` without a daemon: the tools a client sees, refusals as one-line tool
errors, the brief as a resource, the mistake log, notes, and a clean stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from harness.cli.main import main
from harness.cli.mcp import MISSING
from tests.mcp.conftest import ROOT, Home, data_of, text_of

TOOLS = {
    "list_presets",
    "start_run",
    "status",
    "list_runs",
    "abort_run",
    "set_controls",
    "diagnose",
    "search_mistakes",
    "show_mistake",
    "list_incidents",
    "add_note",
    "brief",
}


async def test_the_tools_and_the_brief_resource_are_listed(home: Home) -> None:
    async with home.mcp() as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        resources = (await s.list_resources()).resources
        presets = data_of(await s.call_tool("list_presets", {}))["presets"]
    assert set(tools) == TOOLS
    assert all(t.description for t in tools.values())
    start = tools["start_run"].input_schema
    assert start["required"] == ["preset"] and "overrides" in start["properties"]
    assert tools["status"].annotations is not None and tools["status"].annotations.read_only_hint
    assert [str(r.uri) for r in resources] == ["harness://brief"]
    assert presets["echo"] == "built-in"


async def test_bad_input_is_a_tool_error_with_the_one_line_message(home: Home) -> None:
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "lr: expected a positive number, got 'abc'": (
            "start_run",
            {"preset": "echo", "overrides": {"lr": "abc"}},
        ),
        "unknown override key 'command' (allowed: steps, batch, lr, seed, eval_every, "
        "checkpoint_every)": ("start_run", {"preset": "echo", "overrides": {"command": "rm"}}),
        "steps: expected a positive integer": (
            "start_run",
            {"preset": "echo", "overrides": {"steps": True}},
        ),
        "no preset 'nope' (presets: count, cpu-burn, echo, echo-ddp, echo-slurm, mirror, not, "
        "shift)": ("start_run", {"preset": "nope"}),
        "bad arguments: preset: Field required": ("start_run", {}),
        "no run 'zz-404' (see `harness runs`)": ("status", {"run": "zz-404"}),
        "no mistake M-999 (see `harness mistakes list`)": ("show_mistake", {"mistake_id": "M-999"}),
        "limit must be between 1 and 100, got 0": ("list_incidents", {"limit": 0}),
        "a note needs some text": ("add_note", {"text": "   "}),
        "unknown control 'dropout' (allowed: lr, eval_every, checkpoint_every, data_weights)": (
            "set_controls",
            {"run": "last", "controls": {"dropout": 0.1}},
        ),
        "Unknown tool: rm_rf": ("rm_rf", {}),
    }
    async with home.mcp() as s:
        answers = {expected: await s.call_tool(*call) for expected, call in calls.items()}
    assert all(r.is_error for r in answers.values())
    assert {expected: text_of(r) for expected, r in answers.items()} == {e: e for e in calls}
    stderr = (home.path / "mcp.stderr").read_text()
    assert "Traceback" not in stderr


async def test_without_a_daemon_what_needs_it_says_so_in_one_line(home: Home) -> None:
    down = f"no harness daemon on 127.0.0.1:{home.port}: start it with `harness serve`"
    async with home.mcp() as s:
        started = await s.call_tool("start_run", {"preset": "echo", "overrides": {"steps": 5}})
        # what the store answers still works
        runs = data_of(await s.call_tool("status", {}))
    assert started.is_error and text_of(started) == down
    assert runs == {"runs": []}


async def test_the_brief_resource_reads_and_shows_a_note_left_through_the_tools(
    home: Home,
) -> None:
    async with home.mcp() as s:
        told = data_of(await s.call_tool("add_note", {"text": "loss spikes at step 40"}))
        inbox = data_of(
            await s.call_tool("add_note", {"text": "echo is done, over to you", "kind": "inbox"})
        )
        read = await s.read_resource("harness://brief")
        tool = text_of(await s.call_tool("brief", {}))
    assert told["kind"] == "note" and inbox["kind"] == "inbox"
    [contents] = read.contents
    text = getattr(contents, "text", "")
    assert contents.mime_type == "text/markdown"
    assert text.startswith("Harness brief")
    assert "loss spikes at step 40" in text and "from mcp: echo is done, over to you" in text
    assert "== Unread inbox (1) ==" in tool
    # the inbox note is there for the terminal, and reading the brief marked nothing read
    shown = home.harness("inbox", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(n["text"], n["author"]) for n in json.loads(shown.stdout)] == [
        ("echo is done, over to you", "mcp")
    ]


async def test_mistakes_search_finds_an_imported_entry_and_shows_it(home: Home) -> None:
    done = home.harness("mistakes", "import", str(ROOT / "tests/fixtures/MISTAKES.md"))
    assert done.returncode == 0, done.stderr
    async with home.mcp() as s:
        hits = data_of(await s.call_tool("search_mistakes", {"query": "model left on the CPU"}))
        mistake = data_of(await s.call_tool("show_mistake", {"mistake_id": "M-001"}))
        none = data_of(await s.call_tool("search_mistakes", {"query": "zebra quokka"}))
    assert hits["hits"][0]["id"] == "M-001" and hits["hits"][0]["kind"] == "mistake"
    assert mistake["title"] == "Model left on the CPU"
    assert "model.to(device)" in mistake["root_cause"]
    assert none == {"hits": []}


def test_stdout_carries_nothing_but_the_protocol(home: Home) -> None:
    """Raw JSON-RPC on the pipes: every line the server writes on stdout is a message."""
    requests: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "brief"}},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "start_run", "arguments": {"preset": "nope"}},
        },
    ]
    errlog = home.path / "raw.stderr"
    answers = []
    with (
        errlog.open("w") as err,
        subprocess.Popen(
            [sys.executable, "-m", "harness", "mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=home.env,
            text=True,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for request in requests:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                if "id" in request:  # one line back, and it must be the answer
                    answers.append(json.loads(proc.stdout.readline()))
            proc.stdin.close()
            rest = proc.stdout.read()  # until the server exits: nothing more
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = errlog.read_text()
    assert proc.returncode == 0, stderr
    assert rest == ""
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert all(a["jsonrpc"] == "2.0" for a in answers)
    assert answers[0]["result"]["serverInfo"]["name"] == "harness"
    assert "Harness brief" in answers[1]["result"]["content"][0]["text"]
    assert answers[2]["result"]["isError"] is True
    assert "no preset 'nope'" in stderr  # the refusal is logged there, not on stdout


def test_without_the_mcp_package_one_line_and_exit_2(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(home.path))
    for name in [m for m in sys.modules if m == "mcp" or m.startswith("mcp.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mcp", None)  # what `import mcp` finds: not installed
    assert main(["mcp"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"harness: error: {MISSING}\n"
    assert MISSING == "the MCP server needs the mcp package: pip install 'harness[mcp]'"
