"""The doors a person uses, unchanged for a Slurm preset: Discord's ``/run start``, ``/run
status`` and ``/run abort`` (the handlers with specified fakes of discord objects), the
HTTP API's ``POST /runs`` on 127.0.0.1, and ``harness check`` and ``harness logs --script``
at the terminal, against the real single-node Slurm.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import httpx
import pytest
from sqlmodel import select

import mistakes as ml
from bot import BotConfig, build_tree
from harness.daemon.api import start_api
from harness.daemon.botservice import BotService
from harness.daemon.config import load_settings
from harness.daemon.service import Service
from harness.runtime.launchers.slurm import STATE_FILE, query_job
from memory import TERMINAL, Run
from sidecar import load_or_create_token
from tests.bot.conftest import ADMIN, GUILD, OPERATOR_ROLE, command, make_interaction
from tests.slurm.conftest import SlurmCluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one cluster

JOBS = Path(__file__).parents[1] / "e2e" / "jobs"
PRESET = f"""
name = "steady-slurm"
command = ["{{python}}", "{JOBS / "steady.py"}", "--seconds", "300", "--every", "0.2"]
device = "cpu"
launcher = "slurm"
[slurm]
cpus_per_task = 1
poll_s = 0.5
[watch]
util_grace_s = 600
stall_s = 30
sample_every_s = 0.25
int_grace_s = 2
term_grace_s = 1
"""

Tree = discord.app_commands.CommandTree[Any]


@pytest.fixture
async def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotService]:
    state = tmp_path / "state"
    (state / "presets").mkdir(parents=True)
    (state / "presets" / "steady-slurm.toml").write_text(PRESET)
    monkeypatch.setenv("HARNESS_HOME", str(state))
    store = ml.open_log(state / "harness.db")
    settings = load_settings({"HARNESS_HOME": str(state), "HARNESS_SIDECAR__PORT": "0"})
    service = Service(settings, store)
    adapter = BotService(service)
    try:
        yield adapter
    finally:
        for run_id in await adapter.active_run_ids():
            await service.supervisor.request_abort(run_id, "test teardown")
        for run_id in service.supervisor.running():
            await asyncio.wait_for(service.supervisor.wait(run_id), 60)
        await service.stop()
        store.close()


async def wait_status(real: BotService, run_id: str, want: tuple[str, ...]) -> Run:
    async with asyncio.timeout(90):
        while True:
            with real.store.read() as s:
                row = s.get(Run, run_id)
            if row is not None and row.status in want:
                return row
            await asyncio.sleep(0.1)


def slurm_job(row: Run) -> str:
    return str(json.loads((Path(row.run_dir) / STATE_FILE).read_text())["job_id"])


def slurm_state(row: Run) -> str:
    state = query_job(slurm_job(row))
    return state.state if state is not None else "GONE"


async def test_discord_starts_shows_and_aborts_a_slurm_run(
    slurm_cluster: SlurmCluster, real: BotService
) -> None:
    config = BotConfig(frozenset({ADMIN}), frozenset({OPERATOR_ROLE}), guild_id=GUILD)
    tree: Tree = build_tree(discord.Client(intents=discord.Intents(guilds=True)), real, config)
    events: list[str] = []
    start = make_interaction(events)
    await command(tree, "run start").callback(start.interaction, preset="steady-slurm")
    with real.store.read() as s:
        [run] = list(s.exec(select(Run)).all())
    assert run.id in (start.embed().title or "")
    row = await wait_status(real, run.id, ("running",))
    assert slurm_state(row) == "RUNNING"
    status = make_interaction(events)
    await command(tree, "run status").callback(status.interaction, run=run.id)
    assert run.id in (status.embed().title or "")
    abort = make_interaction(events)
    await command(tree, "run abort").callback(abort.interaction, run=run.id, reason="enough")
    ended = await wait_status(real, run.id, TERMINAL)
    assert ended.status == "aborted" and "enough" in ended.summary
    assert slurm_state(ended) == "CANCELLED"
    # the batch script it was submitted with, at the terminal
    home = real.service.settings.paths.home
    logs = [sys.executable, "-m", "harness", "logs", run.id, "--script"]
    p = subprocess.run(
        logs,
        capture_output=True,
        text=True,
        timeout=60,
        env={"HARNESS_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("#!/bin/bash\n#SBATCH --nodes=1") and "srun " in p.stdout
    p = subprocess.run(
        [*logs[:-1], "--rank", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HARNESS_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode != 0 and "launched by 'slurm'" in p.stderr
    shown = [sys.executable, "-m", "harness", "status", run.id]
    p = subprocess.run(
        shown,
        capture_output=True,
        text=True,
        timeout=60,
        env={"HARNESS_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0 and f"slurm job {slurm_job(ended)}" in p.stdout, p.stdout


async def test_the_api_launches_a_slurm_preset(
    slurm_cluster: SlurmCluster, real: BotService
) -> None:
    service = real.service
    runner, port = await start_api(service)
    try:
        token = load_or_create_token(service.settings.paths.home)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as api:
            r = await api.post("/runs", json={"preset": "steady-slurm", "source": "test"})
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            row = await wait_status(real, run_id, ("running",))
            got = (await api.get(f"/runs/{run_id}")).json()
            assert got["status"] == "running" and got["spec"]["launcher"] == "slurm"
            r = await api.post(f"/runs/{run_id}/abort", json={"reason": "done"})
            assert r.status_code in (200, 202), r.text
            ended = await wait_status(real, run_id, TERMINAL)
            assert ended.status == "aborted" and slurm_state(row) == "CANCELLED"
    finally:
        await runner.cleanup()


def test_check_asks_the_controller_instead_of_this_machines_ram(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    env = {"HARNESS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    harness = [sys.executable, "-m", "harness"]
    p = subprocess.run(
        [*harness, "check", "echo-slurm"], capture_output=True, text=True, timeout=120, env=env
    )
    assert "slurm" in p.stdout and "controller answers; partitions debug" in p.stdout, p.stdout
    assert "RAM headroom" not in p.stdout  # the nodes' RAM is not this machine's
