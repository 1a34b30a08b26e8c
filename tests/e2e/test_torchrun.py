"""The torchrun launcher end to end: the bundled trainer as 2 DDP ranks on CPU (gloo),
launched by the supervisor with the shipped ``echo-ddp`` preset, real torchrun, real signals.

What a user would see: the run succeeds with both ranks reporting; an abort reaches every
rank through torchrun (one SIGINT each, a checkpoint, nothing left); a rank killed mid-run
fails the run with an incident naming that rank; a rank that stops answering hangs the
other in its collective until the stall rule aborts the run, and every rank is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.core.heartbeat import run_summary
from harness.core.spec import RunSpec, apply_overrides
from harness.runtime import cgroups
from harness.runtime.launchers.torchrun import rank_logs
from harness.runtime.procs import marked_processes
from harness.runtime.specs import load_spec
from harness.runtime.supervisor import Supervisor
from memory import Store
from tests.e2e.conftest import FAST_WATCH, await_for, finish, get_run, gone, incidents

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One data directory for the module: the jobs inherit it from the supervisor."""
    path = tmp_path_factory.getbasetemp() / "ddp-data"
    monkeypatch.setenv("HARNESS_DATA_DIR", str(path))
    return path


def track_by(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cgroup``: the run's own cgroup (skip where there can be none); ``session``: none,
    so the ranks, each in a session of its own, are found by the tree, marker and ledger."""
    if how == "cgroup" and cgroups.base_dir() is None:
        pytest.skip("no writable cgroup v2 here")
    if how == "session":
        monkeypatch.setattr(cgroups, "create", lambda *a, **k: None)


def ddp_spec(*overrides: str) -> RunSpec:
    """The shipped preset, with the e2e thresholds (the utilisation rule stays quiet)."""
    spec, _ = load_spec("echo-ddp")
    watch = [f"watch.{k}={v}" for k, v in FAST_WATCH.items()]
    return apply_overrides(spec, ["args.threads=1", *watch, *overrides])


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def steps(path: Path) -> list[int]:
    return [m["step"] for m in lines(path) if "loss" in m]


def ranks_of(run_id: str) -> dict[int, psutil.Process]:
    """The run's rank processes by rank (torchrun gives each RANK in its environment)."""
    found = {}
    for proc in marked_processes(run_id):
        try:
            rank = proc.environ().get("RANK")
        except psutil.Error:
            continue
        if rank is not None:
            found[int(rank)] = proc
    return found


async def training(sup: Supervisor, run_id: str, run_dir: Path, min_step: int = 2) -> None:
    """Until both ranks have reported a training step (rank 1 in its own file)."""

    def both() -> bool:
        main, other = steps(run_dir / "metrics.jsonl"), steps(run_dir / "metrics.rank1.jsonl")
        return bool(main and other and main[-1] >= min_step and other[-1] >= min_step)

    await await_for(lambda: both() or run_id not in sup.running(), 120, "both ranks training")
    assert run_id in sup.running(), "the run ended before both ranks trained"


def no_survivors(run_id: str, pids: list[int]) -> None:
    assert marked_processes(run_id) == []
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


async def test_echo_ddp_with_two_cpu_processes_succeeds(
    sup: Supervisor, store: Store, tmp_path: Path
) -> None:
    spec = ddp_spec("args.steps=30", "args.eval_every=0", "gates.avg_bit_acc=>= 0.75")
    run_id = await sup.launch(spec, source="test")
    run = await finish(sup, run_id, timeout=240)

    assert run.status == "succeeded", run.summary
    run_dir = Path(run.run_dir)
    main = lines(run_dir / "metrics.jsonl")
    assert main[0]["event"] == "start" and main[0]["world_size"] == 2
    assert main[-1]["event"] == "end" and main[-1]["steps"] == 30
    # rank 1 trained on its own and reported to its own file; rank 0 alone evaluated
    other = lines(run_dir / "metrics.rank1.jsonl")
    assert steps(run_dir / "metrics.rank1.jsonl")[-1] == 30
    assert {"samples_per_s", "fwd_ms"} <= set(other[-2]) and "avg_bit_acc" not in other[-1]
    assert all(m.get("event") != "checkpoint" for m in other)
    # each rank's own output, and both in the run's stdout
    for rank in (0, 1):
        (log,) = rank_logs(run_dir, rank)
        assert "x 2 ranks" in log.read_text()
    assert "[default1]:" in (run_dir / "stdout.log").read_text()
    assert marked_processes(run_id) == []

    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "state")}
    harness = [sys.executable, "-m", "harness"]
    logs = subprocess.run(
        [*harness, "logs", run_id, "--rank", "1"], env=env, capture_output=True, text=True
    )
    assert logs.returncode == 0, logs.stderr
    assert "x 2 ranks, seq_len 32, 30 steps on cpu" in logs.stdout
    status = subprocess.run([*harness, "status", run_id], env=env, capture_output=True, text=True)
    assert "  rank 0: step 30, " in status.stdout and "  rank 1: step 30, " in status.stdout
    missing = subprocess.run(
        [*harness, "logs", run_id, "--rank", "2"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no stdout log for rank 2" in missing.stderr


async def test_abort_reaches_every_rank_once_through_torchrun_and_leaves_none(
    sup: Supervisor, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    track_by("session", monkeypatch)
    # int_grace long enough for the ranks to agree, checkpoint and leave by themselves
    spec = ddp_spec("args.steps=100000", "args.log_every=2", "watch.int_grace_s=30")
    run_id = await sup.launch(spec, source="test")
    job = sup._jobs[run_id]
    run_dir = job.run_dir
    assert not (run_dir / cgroups.RECORD_FILE).exists()  # tracked without a cgroup
    await training(sup, run_id, run_dir)
    ranks = ranks_of(run_id)
    assert sorted(ranks) == [0, 1]
    # each rank's step rate reaches the progress row, and so the heartbeat's line
    await await_for(
        lambda: (
            len([r for r in get_run(store, run_id).progress.get("ranks") or [] if r["rate"]]) == 2
        ),
        60,
        "each rank's rate in the run's progress",
    )
    _, line = run_summary(get_run(store, run_id), now=time.time())
    assert re.search(r" · ranks 2: [\d.]+(-[\d.]+)? it/s", line), line
    wrapper_sid = os.getsid(job.handle.record.pid)
    # torchrun starts every rank in a session of its own: the job's session misses them
    assert all(os.getsid(p.pid) == p.pid != wrapper_sid for p in ranks.values())

    await sup.request_abort(run_id, "enough", by="test")
    run = await finish(sup, run_id, timeout=120)

    assert run.status == "aborted", run.summary
    assert job.terminating is not None
    escalation = job.terminating.result()
    # graceful: SIGINT to torchrun's agent alone, and every rank left before SIGTERM
    assert escalation.signals == [("SIGINT", 1)], escalation
    assert escalation.survivors == []
    end = lines(run_dir / "metrics.jsonl")[-1]
    assert end["event"] == "end" and end["interrupted"] is True
    assert Path(end["checkpoint"]).exists()
    assert lines(run_dir / "metrics.rank1.jsonl")[-1]["interrupted"] is True
    assert end["steps"] == lines(run_dir / "metrics.rank1.jsonl")[-1]["steps"]
    no_survivors(run_id, [p.pid for p in ranks.values()])
    assert [i.rule for i in incidents(store, run_id)] == ["user_abort"]


async def test_a_rank_killed_mid_run_fails_the_run_naming_that_rank(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(ddp_spec("args.steps=100000", "args.log_every=2"), source="test")
    run_dir = sup._jobs[run_id].run_dir
    await training(sup, run_id, run_dir)
    ranks = ranks_of(run_id)
    ranks[1].send_signal(signal.SIGKILL)

    run = await finish(sup, run_id, timeout=120)

    assert run.status == "failed", run.summary
    assert "rank 1 failed first (local rank 1, pid " in run.summary
    assert "killed by SIGKILL" in run.summary
    (incident,) = incidents(store, run_id)
    assert incident.rule == "exit" and "rank 1 failed first" in incident.summary
    no_survivors(run_id, [p.pid for p in ranks.values()])


@pytest.mark.parametrize("how", ["cgroup", "session"])
async def test_a_rank_hung_in_a_collective_is_a_stall_abort_and_no_rank_survives(
    sup: Supervisor, store: Store, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    track_by(how, monkeypatch)
    # stall_s: longer than 3 interpreters take to import torch and meet, on a busy machine
    spec = ddp_spec("args.steps=100000", "args.log_every=2", "watch.stall_s=10")
    run_id = await sup.launch(spec, source="test")
    job = sup._jobs[run_id]
    await training(sup, run_id, job.run_dir)
    assert (job.run_dir / cgroups.RECORD_FILE).exists() == (how == "cgroup")
    ranks = ranks_of(run_id)
    # Rank 1 stops dead (it cannot even handle a signal); rank 0 then waits for it in the
    # gradient all-reduce, in C++, where SIGINT cannot reach Python.
    ranks[1].send_signal(signal.SIGSTOP)

    run = await finish(sup, run_id, timeout=120)

    assert run.status == "aborted", run.summary
    assert "no metrics for " in run.summary
    (incident,) = incidents(store, run_id)
    assert incident.rule == "stall" and incident.mistake_id == "M-037"
    assert job.terminating is not None
    sent = dict(job.terminating.result().signals)
    assert sent["SIGINT"] == 1 and sent["SIGTERM"] >= 2 and sent["SIGKILL"] >= 1, sent
    no_survivors(run_id, [p.pid for p in ranks.values()])
