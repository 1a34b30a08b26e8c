"""The slash-command handlers against the real service: a real supervisor launching real
jobs, a real SQLite file, discord.Interaction fakes specified with create_autospec."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from sqlmodel import select

import mistakes as ml
from bot import BotConfig, build_tree
from harness.cli.main import main as harness_main
from harness.daemon.botservice import BotService
from harness.daemon.config import load_settings
from harness.daemon.service import Service
from memory import TERMINAL, Run

from .conftest import ADMIN, GUILD, OPERATOR_ROLE, STRANGER, command, make_interaction

JOB = Path(__file__).parent / "jobs" / "quick.py"
PRESET = f"""
name = "quick"
command = ["{{python}}", "{JOB}"]
device = "cpu"
[args]
steps = 100
[watch]
min_ram_free_gb = 0.05
util_grace_s = 600
stall_s = 30
sample_every_s = 0.25
int_grace_s = 2
term_grace_s = 1
[gates]
acc = ">= 0.5"
"""

Tree = discord.app_commands.CommandTree[Any]


@pytest.fixture
async def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotService]:
    state = tmp_path / "state"
    (state / "presets").mkdir(parents=True)
    (state / "presets" / "quick.toml").write_text(PRESET)
    monkeypatch.setenv("HARNESS_HOME", str(state))
    store = ml.open_log(state / "harness.db")
    service = Service(load_settings({"HARNESS_HOME": str(state)}), store)
    adapter = BotService(service)
    try:
        yield adapter
    finally:
        for run_id in await adapter.active_run_ids():
            await service.supervisor.request_abort(run_id, "test teardown")
        for run_id in service.supervisor.running():
            await asyncio.wait_for(service.supervisor.wait(run_id), 30)
        await service.stop()
        store.close()


@pytest.fixture
def tree(real: BotService) -> Tree:
    config = BotConfig(frozenset({ADMIN}), frozenset({OPERATOR_ROLE}), guild_id=GUILD)
    return build_tree(discord.Client(intents=discord.Intents(guilds=True)), real, config)


def runs(real: BotService) -> list[Run]:
    with real.store.read() as s:
        return list(s.exec(select(Run)).all())


async def wait_status(real: BotService, run_id: str, want: tuple[str, ...]) -> Run:
    async with asyncio.timeout(30):
        while True:
            with real.store.read() as s:
                row = s.get(Run, run_id)
            if row is not None and row.status in want:
                return row
            await asyncio.sleep(0.1)


async def test_start_status_controls_abort_through_discord(tree: Tree, real: BotService) -> None:
    events: list[str] = []
    start = make_interaction(events)
    await command(tree, "run start").callback(
        start.interaction, preset="quick", overrides="steps=300 lr=0.002"
    )
    [run] = runs(real)
    assert "quick" in (start.embed().title or "") and run.id in (start.embed().title or "")
    row = await wait_status(real, run.id, ("running",))
    assert row.spec["args"]["steps"] == 300 and row.spec["args"]["lr"] == 0.002

    status = make_interaction(events)
    await command(tree, "run status").callback(status.interaction, run=run.id[:12])
    assert run.id in (status.embed().title or "")

    ctl = make_interaction(events)
    await command(tree, "controls set").callback(
        ctl.interaction, run=run.id, key="lr", value="0.01"
    )
    controls = json.loads((Path(row.run_dir) / "controls.json").read_text())
    assert controls["lr"] == 0.01
    # the job applies it and reports it in its metrics
    async with asyncio.timeout(10):
        while '"applied":{"lr":0.01}' not in (Path(row.run_dir) / "metrics.jsonl").read_text():
            await asyncio.sleep(0.1)

    abort = make_interaction(events)
    await command(tree, "run abort").callback(abort.interaction, run=run.id, reason="enough")
    ended = await wait_status(real, run.id, TERMINAL)
    assert ended.status == "aborted" and "enough" in ended.summary


async def test_mistakes_search_show_and_incidents(tree: Tree, real: BotService) -> None:
    events: list[str] = []
    search = make_interaction(events)
    await command(tree, "mistakes search").callback(search.interaction, query="gpu util")
    embed = search.embed()
    assert "M-015" in json.dumps(embed.to_dict())
    show = make_interaction(events)
    await command(tree, "mistakes show").callback(show.interaction, mistake_id="m-32")
    assert "M-032" in (show.embed().title or "")
    inc = make_interaction(events)
    await command(tree, "incidents").callback(inc.interaction, run=None)
    inc.embed()


async def test_tell_reaches_harness_inbox(
    tree: Tree, real: BotService, capsys: pytest.CaptureFixture[str]
) -> None:
    fi = make_interaction([])
    await command(tree, "tell").callback(fi.interaction, text="back at 9, keep echo running")
    assert harness_main(["inbox"]) == 0
    out = capsys.readouterr().out
    assert "back at 9, keep echo running" in out and f"discord:{ADMIN}" in out
    assert harness_main(["inbox"]) == 0
    assert "back at 9" not in capsys.readouterr().out  # read now


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("lr=-1", "lr: expected a positive number"),
        ("steps=abc", "steps: expected a positive integer"),
        ("foo=1", "unknown override key 'foo'"),
        ("command=rm", "unknown override key 'command'"),
    ],
)
async def test_bad_overrides_are_refused_and_nothing_starts(
    tree: Tree, real: BotService, overrides: str, message: str
) -> None:
    fi = make_interaction([])
    await command(tree, "run start").callback(fi.interaction, preset="quick", overrides=overrides)
    assert message in fi.ephemeral_text()
    assert runs(real) == []


async def test_strangers_change_nothing(tree: Tree, real: BotService) -> None:
    admin = make_interaction([])
    await command(tree, "run start").callback(admin.interaction, preset="quick", overrides="")
    [run] = runs(real)
    row = await wait_status(real, run.id, ("running",))
    before = (Path(row.run_dir) / "controls.json").read_text()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("run start", {"preset": "quick", "overrides": ""}),
        ("run abort", {"run": run.id, "reason": "x"}),
        ("controls set", {"run": run.id, "key": "lr", "value": "0.5"}),
        ("heartbeat", {}),
    ]
    for path, kwargs in cases:
        fi = make_interaction([], user_id=STRANGER)
        await command(tree, path).callback(fi.interaction, **kwargs)
        assert "not allowed" in fi.ephemeral_text().lower() or "allow" in fi.ephemeral_text()
    assert [r.id for r in runs(real)] == [run.id]
    with real.store.read() as s:
        again = s.get(Run, run.id)
    assert again is not None and again.abort_requested is None and again.status == "running"
    assert (Path(row.run_dir) / "controls.json").read_text() == before
    with real.store.read() as s:
        from memory import Heartbeat

        assert s.exec(select(Heartbeat)).all() == []


async def test_diagnose_reads_the_runs_metrics_through_the_real_service(
    tree: Tree, real: BotService, tmp_path: Path
) -> None:
    corpus = Path(__file__).parents[1] / "diagnosis" / "corpus" / "real_data_change.jsonl"
    run_dir = tmp_path / "runs" / "dc-1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_bytes(corpus.read_bytes())
    with real.store.write() as s:
        s.add(Run(id="dc-1", name="dc", spec={}, status="failed", run_dir=str(run_dir)))
    events: list[str] = []
    fi = make_interaction(events)
    await command(tree, "diagnose").callback(fi.interaction, run="dc-1")
    embed = fi.embed()
    assert embed.title == "Diagnosis · dc-1"
    collapse = [f for f in embed.fields if (f.name or "").startswith("metric_collapse")]
    assert collapse and "1) **data_change**" in (collapse[0].value or "")
