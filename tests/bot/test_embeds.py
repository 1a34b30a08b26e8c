"""The embed builders, without Discord: right content, right colour, and always within
Discord's limits however long the texts the service hands over."""

from __future__ import annotations

import discord
import pytest

from bot import BriefView, HeartbeatView, IncidentView, MistakeView, RunView, SearchHitView
from bot._embeds import (
    brief_embed,
    clip,
    controls_embed,
    fit_embed,
    heartbeat_embed,
    incidents_embed,
    mistake_embed,
    one_line,
    run_embed,
    runs_embed,
    search_embed,
    status_colour,
)

from .conftest import run_view

LONG = "x" * 9000
WORDS = "word " * 3000


def assert_within_limits(embed: discord.Embed) -> None:
    assert len(embed.title or "") <= 256
    assert len(embed.description or "") <= 4096
    assert len(embed.fields) <= 25
    for f in embed.fields:
        assert 1 <= len(f.name or "") <= 256
        assert 1 <= len(f.value or "") <= 1024
    assert len(embed.footer.text or "") <= 2048
    assert len(embed) <= 6000


def test_run_embed_shows_status_progress_controls_and_gates() -> None:
    view = run_view(
        "not-000",
        "failed",
        name="not",
        summary="failed: gate avg_bit_acc 0.00 < 0.93",
        ended_at=1_700_000_600.0,
        gates=[
            {"gate": "avg_bit_acc >= 0.93", "value": 0.0, "passed": False},
            {"gate": "loss <= 0.1", "value": None, "passed": False},
            {"gate": "acc >= 0.5", "value": 0.7, "passed": True},
        ],
    )
    embed = run_embed(view)
    assert embed.title == "not · not-000"
    assert (embed.description or "").splitlines() == [
        "**failed**",
        view.line,
        "failed: gate avg_bit_acc 0.00 < 0.93",
    ]
    fields = {f.name: f.value for f in embed.fields}
    assert fields["started"] == "<t:1700000000:R>"
    assert fields["ended"] == "<t:1700000600:R>"
    assert fields["controls"] == "`lr` = `0.001`"
    assert (fields["gates"] or "").splitlines() == [
        "❌ avg_bit_acc >= 0.93: 0.0",
        "❌ loss <= 0.1: missing",
        "✅ acc >= 0.5: 0.7",
    ]
    assert embed.colour == discord.Colour(0xE74C3C)


@pytest.mark.parametrize(
    ("status", "colour"),
    [("running", 0x3498DB), ("succeeded", 0x2ECC71), ("failed", 0xE74C3C), ("aborted", 0xE67E22)],
)
def test_colours_follow_the_status(status: str, colour: int) -> None:
    assert status_colour(status) == colour
    assert run_embed(run_view(status=status)).colour == discord.Colour(colour)


def test_unknown_status_is_grey_not_an_error() -> None:
    assert run_embed(run_view(status="exploded")).colour == discord.Colour(0x95A5A6)


def test_run_embed_with_huge_texts_stays_within_limits() -> None:
    view = RunView(
        id="r" * 300,
        name="n" * 300,
        status="running",
        summary=LONG,
        line=LONG,
        controls={f"k{i}": "v" * 100 for i in range(50)},
        gates=[{"gate": "g" * 200, "value": "v" * 200, "passed": True} for _ in range(40)],
    )
    embed = run_embed(view)
    assert_within_limits(embed)
    assert (embed.title or "").endswith("…")


def test_many_runs_keep_whole_lines_and_say_how_many_are_left() -> None:
    views = [run_view(f"run-{i:04d}", line=WORDS[:300]) for i in range(200)]
    embed = runs_embed(views, title="Recent runs", empty="none")
    assert_within_limits(embed)
    lines = (embed.description or "").splitlines()
    assert lines[0].startswith("`run-0000`")
    assert lines[-1].startswith("… and ") and lines[-1].endswith(" more")
    shown = len(lines) - 1
    assert lines[-1] == f"… and {200 - shown} more"
    assert embed.footer.text == "200 run(s)"


def test_no_runs_says_so() -> None:
    embed = runs_embed([], title="Active runs", empty="No active runs.")
    assert embed.description == "No active runs."


def test_controls_embed_with_many_controls() -> None:
    controls = {f"key{i}": "v" * 2000 for i in range(40)}
    embed = controls_embed("echo-001", "key1", "v", controls)
    assert_within_limits(embed)
    assert embed.fields[0].name == "key0"


def test_search_embed_and_empty_search() -> None:
    hits = [SearchHitView("mistake", f"M-{i:03d}", "t" * 400, LONG) for i in range(30)]
    embed = search_embed("q" * 400, hits)
    assert_within_limits(embed)
    assert (embed.fields[0].name or "").startswith("mistake M-000 · ")
    assert search_embed("nothing", []).description == "No matches."


def test_mistake_embed_keeps_field_order_and_limits() -> None:
    fields = [(name, LONG) for name in ("When", "Symptom", "Root cause", "Fix", "Prevention")]
    embed = mistake_embed(MistakeView("M-030", "RAM " * 100, "memory", fields))
    assert_within_limits(embed)
    assert [f.name for f in embed.fields][:2] == ["When", "Symptom"]
    assert (embed.title or "").startswith("M-030: RAM")


def test_empty_field_values_become_a_dash() -> None:
    embed = mistake_embed(MistakeView("M-001", "t", "", [("Fix", "")]))
    assert [(f.name, f.value) for f in embed.fields] == [("Fix", "—")]


def test_incidents_embed_colours_by_the_worst_unresolved() -> None:
    warn = IncidentView(2, 1.0, "r1", "stall", None, "warn", "slow", False)
    resolved_abort = IncidentView(1, 0.0, "r1", "nan", None, "abort", "NaN", True)
    assert incidents_embed([warn, resolved_abort], run=None).colour == discord.Colour(0xF1C40F)
    assert incidents_embed([], run="r1").description == "No incidents."
    many = [IncidentView(i, 0.0, "r", "rule", "M-015", "abort", LONG, False) for i in range(500)]
    embed = incidents_embed(many, run="r")
    assert_within_limits(embed)
    assert embed.title == "Incidents · r"
    assert (embed.description or "").splitlines()[-1].endswith(" more")


def test_heartbeat_embed_is_refitted_and_coloured_by_health() -> None:
    raw = {"title": "T" * 500, "description": LONG, "fields": [{"name": "a", "value": LONG}] * 30}
    embed = heartbeat_embed(HeartbeatView("bad", "text", raw))
    assert_within_limits(embed)
    assert embed.colour == discord.Colour(0xE74C3C)
    bare = heartbeat_embed(HeartbeatView("idle", "idle: no active runs", {}))
    assert bare.description == "idle: no active runs"
    assert bare.colour == discord.Colour(0x95A5A6)


def test_brief_embed_sections_and_text_fallback() -> None:
    sections = {f"section {i}": [WORDS[:200]] * 20 for i in range(30)}
    embed = brief_embed(BriefView("text", sections))
    assert_within_limits(embed)
    assert brief_embed(BriefView("just text", {})).description == "just text"


def test_fit_embed_drops_fields_before_cutting_the_description() -> None:
    embed = fit_embed(
        {
            "title": "t",
            "description": "d" * 4000,
            "fields": [{"name": "n", "value": "v" * 1000}] * 5,
        }
    )
    assert len(embed) <= 6000
    assert len(embed.fields) == 1
    assert embed.description == "d" * 4000


def test_clip_and_one_line() -> None:
    assert clip("abcdef", 4) == "abc…"
    assert clip("abc", 3) == "abc"
    assert one_line("a\n  b\tc", 100) == "a b c"
    assert len(one_line(LONG)) == 300
