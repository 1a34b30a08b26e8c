"""The ``slurm`` launcher end to end on a real single-node Slurm (``cluster.sh up``).

No ``sbatch`` is mocked: the supervisor submits to the real controller, the real slurmd
runs the job under ``srun`` with the node agent, ``scancel`` stops it. What a user would
see: a healthy job succeeds with its gate; a sleeper is aborted for low CPU from the node
agent's samples, cancelled, and nothing of it is left; a NaN job is aborted; a held job
waits as queued, judged by nothing, and runs once released; a job over its time limit
ends TIMEOUT with its incident; a supervisor killed hard is replaced and the new one
re-adopts the job by its Slurm id.
"""

# ruff: noqa: F811 - the e2e fixtures are imported by name, and used by name
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.spec import RunSpec
from harness.runtime.launchers.slurm import SCRIPT_FILE, STATE_FILE, query_job
from harness.runtime.nodeagent import VISIBLE_FILE
from harness.runtime.procs import marked_processes
from harness.runtime.supervisor import Supervisor
from memory import Store
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    FAST_WATCH,
    TOKEN_ENV,
    Notes,
    Reaper,
    await_for,
    finish,
    get_run,
    incidents,
    notes,
    reaper,
    settings,
    store,
    sup,
    wait_for,
)
from tests.e2e.test_supervisor_cli import Cli, cli, write_spec  # noqa: F401 - cli: a fixture
from tests.slurm.conftest import CLUSTER_SH, SlurmCluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one cluster

JOBS = Path(__file__).parent / "jobs"
E2E_JOBS = Path(__file__).parents[1] / "e2e" / "jobs"
# the utilisation rule on, and quick: an idle job is aborted seconds after it runs
JUDGED = {"util_grace_s": 3.0, "util_window_s": 2.0, "min_util": 0.5}


def slurm_spec(command: list[str], *, name: str = "slurm-e2e", **fields: Any) -> RunSpec:
    watch = {**FAST_WATCH, "stall_s": 30.0, **fields.pop("watch", {})}
    slurm = {"cpus_per_task": 1, "poll_s": 0.5, **fields.pop("slurm", {})}
    data = {
        "name": name,
        "command": command,
        "device": "cpu",
        "launcher": "slurm",
        "watch": watch,
        "slurm": slurm,
        **fields,
    }
    return RunSpec.model_validate(data)


def py(script: Path, *args: object) -> list[str]:
    return [sys.executable, str(script), *(str(a) for a in args)]


def job_id(run_dir: str) -> str:
    return str(json.loads((Path(run_dir) / STATE_FILE).read_text())["job_id"])


def slurm_state(jid: str) -> str:
    state = query_job(jid)
    return state.state if state is not None else "GONE"


def rules(store: Store, run_id: str) -> list[str]:
    return [i.rule for i in incidents(store, run_id)]


async def test_a_healthy_job_succeeds_with_its_gate(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    spec = slurm_spec(py(JOBS / "busy.py", 6, 0.97), watch=JUDGED, gates={"score": ">= 0.9"})
    run_id = await sup.launch(spec, source="test")
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "succeeded", (row.summary, rules(store, run_id))
    assert row.summary == "succeeded: score = 0.97 (pass, gate score >= 0.9)"
    assert row.exit_code == 0 and rules(store, run_id) == []
    run_dir = Path(row.run_dir)
    assert slurm_state(job_id(row.run_dir)) == "COMPLETED"
    # the node agent sampled the job on its node: a busy job reads busy
    node = slurm_cluster.node
    samples = [json.loads(x) for x in (run_dir / f"probes.{node}.jsonl").read_text().splitlines()]
    assert max(s["cpu_util"] or 0 for s in samples) > 0.5
    progress = row.progress or {}
    assert progress["where"] == node and (progress["util"] or 0) > 0.5
    script = (run_dir / SCRIPT_FILE).read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "harness.runtime.nodeagent" in script


async def test_a_sleeper_is_aborted_for_low_cpu_and_cancelled_leaving_nothing(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    spec = slurm_spec(py(E2E_JOBS / "sleeper.py", 300), watch=JUDGED)
    run_id = await sup.launch(spec, source="test")
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "aborted", row.summary
    assert "utilisation" in rules(store, run_id)
    (incident,) = [i for i in incidents(store, run_id) if i.rule == "utilisation"]
    assert "CPU" in incident.summary and incident.mistake_id in ("M-015", "M-035")
    jid = job_id(row.run_dir)
    assert slurm_state(jid) == "CANCELLED"
    wait_for(lambda: not marked_processes(run_id), 30, "every process of the job gone")


async def test_a_nan_job_is_aborted(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(slurm_spec(py(E2E_JOBS / "nan_loss.py")), source="test")
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "aborted" and "nonfinite" in rules(store, run_id), row.summary
    assert slurm_state(job_id(row.run_dir)) == "CANCELLED"
    wait_for(lambda: not marked_processes(run_id), 30, "every process of the job gone")


async def test_a_held_job_waits_as_queued_judged_by_nothing_then_runs(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    # A stall limit of 3 s and an idle-abort after 2 s: 12 s in the queue would trip both
    # if queue time were judged.
    watch = {**JUDGED, "stall_s": 3.0, "util_grace_s": 2.0}
    spec = slurm_spec(
        py(JOBS / "busy.py", 4, 0.95),
        watch=watch,
        slurm={"extra": ["--hold"]},
        gates={"score": ">= 0.9"},
    )
    run_id = await sup.launch(spec, source="test")
    await await_for(
        lambda: (get_run(store, run_id).progress or {}).get("queued") is not None,
        30,
        "the run shown as queued",
    )
    await await_for(lambda: _held_for(store, run_id) >= 12, 60, "12 s in the queue")
    row = get_run(store, run_id)
    assert row.status == "queued" and rules(store, run_id) == []
    queued = (row.progress or {})["queued"]
    assert queued["reason"] == "JobHeldUser" and queued["queued_s"] >= 10
    from harness.core.heartbeat import run_summary

    _, line = run_summary(row, now=time.time())
    assert line.startswith("queued ") and "reason JobHeldUser" in line
    jid = job_id(row.run_dir)
    subprocess.run(["scontrol", "release", jid], check=True, timeout=30)
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "succeeded", (row.summary, rules(store, run_id))


def _held_for(store: Store, run_id: str) -> float:
    progress = get_run(store, run_id).progress or {}
    return float((progress.get("queued") or {}).get("queued_s") or 0)


async def test_a_job_over_its_time_limit_ends_timeout_with_its_incident(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    command = py(E2E_JOBS / "steady.py", "--seconds", 600, "--every", 0.5)
    spec = slurm_spec(command, slurm={"time": "1"})  # one minute
    run_id = await sup.launch(spec, source="test")
    row = await finish(sup, run_id, timeout=240)
    assert row.status == "failed", row.summary
    (incident,) = [i for i in incidents(store, run_id) if i.rule == "scheduler_timeout"]
    assert incident.mistake_id == "M-046"
    assert "time limit 00:01:00" in incident.summary and "TIMEOUT" in row.summary


async def test_an_abort_of_a_pending_job_cancels_it(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    spec = slurm_spec(py(E2E_JOBS / "sleeper.py", 60), slurm={"extra": ["--hold"]})
    run_id = await sup.launch(spec, source="test")
    await await_for(lambda: get_run(store, run_id).status == "queued", 30, "queued")
    await sup.request_abort(run_id, "changed my mind", by="test")
    row = await finish(sup, run_id, timeout=60)
    assert row.status == "aborted" and "changed my mind" in row.summary
    assert slurm_state(job_id(row.run_dir)) == "CANCELLED"


def test_a_supervisor_killed_hard_is_replaced_and_the_job_re_adopted(
    slurm_cluster: SlurmCluster, cli: Cli, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    spec = write_spec(
        tmp_path / "keeper.toml",
        "keeper",
        py(E2E_JOBS / "steady.py", "--release", release, "--end", "score=0.97"),
        gates={"score": ">= 0.9"},
    )
    text = spec.read_text().replace('device = "cpu"', 'device = "cpu"\nlauncher = "slurm"')
    spec.write_text(text + "\n[slurm]\ncpus_per_task = 1\npoll_s = 0.5\n")
    first, first_out = cli.start("run", str(spec), log="run-keeper")
    row = cli.wait_running("keeper", first, first_out)
    jid = job_id(row.run_dir)
    wait_for(lambda: slurm_state(jid) == "RUNNING", 60, "the job running")
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    assert slurm_state(jid) == "RUNNING"  # the job lives on without its supervisor
    adopt, adopt_out = cli.start("adopt", log="adopt")
    wait_for(
        lambda: (r := cli.run_named("keeper")) is not None and r.supervisor_pid == adopt.pid,
        60,
        "keeper re-adopted",
        while_alive=adopt,
        output=adopt_out,
    )
    release.write_text("go\n")
    assert adopt.wait(timeout=120) == 0, adopt_out.read_text()
    assert "keeper: re-adopted after a supervisor restart" in adopt_out.read_text()
    kept = cli.json("status", row.id)
    assert kept["status"] == "succeeded", kept["summary"]
    assert slurm_state(jid) == "COMPLETED"


async def test_a_run_dir_the_job_cannot_see_fails_with_one_line_naming_it(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store
) -> None:
    # One machine cannot unshare a filesystem; what the job checks is the token the
    # supervisor wrote in the run dir, so another run dir's token is what a node whose
    # "same" path is a different directory would see.
    spec = slurm_spec(py(E2E_JOBS / "sleeper.py", 60), slurm={"extra": ["--hold"]})
    run_id = await sup.launch(spec, source="test")
    await await_for(lambda: get_run(store, run_id).status == "queued", 30, "queued")
    row = get_run(store, run_id)
    (Path(row.run_dir) / VISIBLE_FILE).write_text("a different directory\n")
    subprocess.run(["scontrol", "release", job_id(row.run_dir)], check=True, timeout=30)
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "failed"
    (incident,) = [i for i in incidents(store, run_id) if i.rule == "shared_fs"]
    assert incident.mistake_id == "M-048"
    assert "never reached its run directory" in row.summary and row.run_dir in row.summary
    assert "\n" not in row.summary
    slurm_out = next(Path(row.run_dir).glob("slurm-*.out")).read_text()
    assert "is not visible from node" in slurm_out  # the job's own words, in its output


async def test_a_node_failure_is_resubmitted_from_the_last_checkpoint(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store, notes: Notes, tmp_path: Path
) -> None:
    command = py(JOBS / "resumable.py", 150, tmp_path / "ckpt")
    spec = slurm_spec(
        command,
        slurm={"requeue_on": ["NODE_FAIL"], "requeue_limit": 1},
        gates={"score": ">= 1"},
        resume=["--resume", "{checkpoint}"],
    )
    run_id = await sup.launch(spec, source="test")
    row = get_run(store, run_id)
    metrics = Path(row.run_dir) / "metrics.jsonl"
    await await_for(lambda: '"checkpoint"' in metrics.read_text(), 60, "a checkpoint event")
    first = job_id(row.run_dir)
    node = slurm_cluster.node
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", "reason=harness-test"],
        check=True,
        timeout=30,
    )
    try:
        await await_for(lambda: job_id(row.run_dir) != first, 60, "the job resubmitted")
    finally:  # the node comes back (ReturnToService=2 brings it back by itself here)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], timeout=30)
    assert slurm_state(first) == "NODE_FAIL"
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "succeeded", (row.summary, rules(store, run_id))
    assert (row.result or {})["final"]["resumed_from"] >= 5  # from a checkpoint, not step 0
    (incident,) = [i for i in incidents(store, run_id) if i.rule == "scheduler_requeue"]
    assert f"Slurm job {first} ended NODE_FAIL: resubmitted as job" in incident.summary
    assert "from " in incident.summary and "attempt 2 of 2" in incident.summary
    assert any("resubmitted as job" in t for t in notes.texts())
    script = (Path(row.run_dir) / SCRIPT_FILE).read_text()
    assert "--resume" in script  # the second submission carries the checkpoint


async def test_a_controller_outage_is_not_the_end_of_the_run(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    command = py(E2E_JOBS / "steady.py", "--release", release, "--end", "score=0.97")
    run_id = await sup.launch(slurm_spec(command, gates={"score": ">= 0.9"}), source="test")
    await await_for(lambda: get_run(store, run_id).status == "running", 60, "running")
    subprocess.run(["pkill", "-x", "slurmctld"], timeout=30)
    try:
        await await_for(
            lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0,
            30,
            "the controller down",
        )
        await asyncio.sleep(3)  # several polls with no answer
        assert get_run(store, run_id).status == "running"
    finally:
        # the controller must not carry this test's token: the reaper would kill it after
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        up = subprocess.run(
            ["bash", str(CLUSTER_SH), "up"], capture_output=True, timeout=300, env=env
        )
        assert up.returncode == 0, up.stdout[-2000:]
    release.write_text("go\n")
    row = await finish(sup, run_id, timeout=120)
    assert row.status == "succeeded", (row.summary, rules(store, run_id))


async def test_an_abort_signals_int_first_so_the_job_checkpoints(
    slurm_cluster: SlurmCluster, sup: Supervisor, store: Store, tmp_path: Path
) -> None:
    ckpt, ready = tmp_path / "ckpt.txt", tmp_path / "ready"
    command = py(E2E_JOBS / "steady.py", "--seconds", 300, "--checkpoint", ckpt, "--ready", ready)
    run_id = await sup.launch(slurm_spec(command), source="test")
    await await_for(ready.exists, 60, "the job's SIGINT handler installed")
    await sup.request_abort(run_id, "stop and keep the work", by="test")
    row = await finish(sup, run_id, timeout=60)
    assert row.status == "aborted" and "stop and keep the work" in row.summary
    assert ckpt.read_text().startswith("step ")  # it got SIGINT, checkpointed, and exited
    metrics = (Path(row.run_dir) / "metrics.jsonl").read_text()
    assert '"event": "checkpoint"' in metrics or '"event":"checkpoint"' in metrics
    wait_for(lambda: not marked_processes(run_id), 30, "every process of the job gone")
