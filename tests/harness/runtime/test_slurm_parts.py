"""The Slurm launcher's parts that need no cluster: Slurm's words parsed, the batch script,
the node agent run for real as a process, its files read back, queue time in the machine.

The end-to-end tests on a real single-node Slurm are in ``tests/slurm``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.machine import (
    Began,
    Exited,
    ProbeSample,
    Queued,
    RecordIncident,
    RunMachine,
    Tick,
)
from harness.core.rules import check_scheduler_end
from harness.core.spec import RunSpec, SlurmConfig
from harness.runtime.launchers.slurm import (
    SlurmState,
    _state_of,
    batch_script,
    last_checkpoint,
    parse_scontrol,
)
from harness.runtime.nodeagent import NOT_VISIBLE_EXIT, VISIBLE_FILE
from harness.runtime.probes import NodeProbe
from harness.runtime.specs import with_resume
from harness.runtime.wrap import read_exit
from mistakes import RULE_LINKS

ROOT = Path(__file__).resolve().parents[3]

PENDING = (
    "JobId=42 JobName=harness-x UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 "
    "Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=Resources Dependency=(null) "
    "Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 "
    "TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-12-01T23:40:00 EligibleTime=2026-12-01"
    "T23:40:00 StartTime=Unknown EndTime=Unknown Partition=debug NodeList=(null) "
    "Command=/tmp/my runs/x/job.sbatch WorkDir=/tmp/my runs StdOut=/tmp/x/slurm-42.out"
)


def test_scontrol_lines_are_read_key_by_key_with_spaces_in_values() -> None:
    fields = parse_scontrol(PENDING)
    assert fields["JobState"] == "PENDING" and fields["Reason"] == "Resources"
    assert fields["Command"] == "/tmp/my runs/x/job.sbatch"  # a value may hold spaces
    state = _state_of(fields)
    assert state.waiting and not state.ended and state.nodes == ""
    assert state.time_limit == "00:01:00" and state.start_time is None
    assert state.submit_time == time.mktime(
        time.strptime("2026-12-01T23:40:00", "%Y-%m-%dT%H:%M:%S")
    )
    done = _state_of(
        parse_scontrol("JobId=7 JobState=CANCELLED Reason=None ExitCode=0:15 NodeList=n1")
    )
    assert done.state == "CANCELLED" and done.ended and (done.exit_code, done.signal) == (0, 15)
    assert _state_of(parse_scontrol("JobId=7 JobState=TIMEOUT ExitCode=0:1")).ended
    assert _state_of(parse_scontrol("")).state == "UNKNOWN"


def test_the_batch_script_quotes_every_word_and_checks_the_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "a dir; rm -rf ~"
    cfg = SlurmConfig(
        nodes=2,
        ntasks_per_node=2,
        cpus_per_task=4,
        gpus_per_node=1,
        time="1:00:00",
        partition="gpu",
        extra=["--constraint=a100"],
    )
    argv = [sys.executable, "-c", "print('$(whoami)')"]
    script = batch_script(argv, run_id="r-1", run_dir=run_dir, token="t0k", cfg=cfg)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    options = [ln.removeprefix("#SBATCH ") for ln in lines if ln.startswith("#SBATCH")]
    assert options == [
        "--nodes=2",
        "--ntasks-per-node=2",
        "--cpus-per-task=4",
        "--gpus-per-node=1",
        "--partition=gpu",
        "--time=1:00:00",
        "--no-requeue",
        "--constraint=a100",
    ]
    srun = shlex.split(next(ln for ln in lines if ln.startswith("srun ")))
    assert srun[0] == "srun" and "--label" in srun  # 4 tasks: output lines say which
    assert srun[-3:] == argv  # the command, word for word, whatever it holds
    assert lines[-2:] == ['if [ -e "$run_dir/.abort" ]; then sleep 120; fi', 'exit "$code"']
    agent = srun.index("harness.runtime.nodeagent")
    assert srun[agent + 1 : agent + 4] == [str(run_dir), "t0k", "--"]
    # the script itself runs: with no .visible file it stops with the one line and 97
    run_dir.mkdir()
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    p = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == NOT_VISIBLE_EXIT
    assert "is not visible from node" in p.stderr and "filesystem the nodes share" in p.stderr


def test_a_resubmission_resumes_from_the_last_checkpoint_event_with_the_specs_words(
    tmp_path: Path,
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"event": "checkpoint", "path": "/c/step-10.pt", "step": 10}\n'
        "not json\n"
        '{"event": "checkpoint", "path": "/c/step-20.pt", "step": 20}\n'
        '{"step": 21, "loss": 0.5}\n'
    )
    assert last_checkpoint(tmp_path) == "/c/step-20.pt"
    assert last_checkpoint(tmp_path / "none") is None
    argv = ["python", "-m", "model.train", "--steps", "50"]
    assert with_resume(argv, ["--resume={checkpoint}", "--fresh-optim"], "/c/step-20.pt") == [
        *argv,
        "--resume=/c/step-20.pt",
        "--fresh-optim",
    ]
    assert with_resume(argv, [], "/c/step-20.pt") == argv  # no resume words: as it was


def _agent(run_dir: Path, token: str, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-P", "-m", "harness.runtime.nodeagent", str(run_dir), token, "--"]
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_RUN_ID": "run-agent", **env}
    return subprocess.run(
        [*argv, sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )


def test_the_node_agent_samples_its_job_and_keeps_the_exit_status(tmp_path: Path) -> None:
    (tmp_path / VISIBLE_FILE).write_text("tok\n")
    busy = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\nraise SystemExit(3)"
    p = _agent(
        tmp_path,
        "tok",
        busy,
        HARNESS_SAMPLE_EVERY_S="0.2",
        SLURMD_NODENAME="nodeA",
        SLURM_CPUS_ON_NODE="1",
    )
    assert p.returncode == 3, p.stderr
    assert read_exit(tmp_path) == 3
    started = json.loads((tmp_path / "nodes" / "nodeA.0.json").read_text())
    assert started["node"] == "nodeA" and started["task"] == 0
    lines = [json.loads(x) for x in (tmp_path / "probes.nodeA.jsonl").read_text().splitlines()]
    assert len(lines) >= 3
    # one busy process on the one CPU Slurm gave the job: near 100 % of its allocation
    assert max(x["cpu_util"] for x in lines if x["cpu_util"] is not None) > 0.6
    assert all(x["ram_available"] > 0 and x["node"] == "nodeA" for x in lines)
    # read back through the probe interface, as the supervisor does
    probe = NodeProbe(tmp_path, stale_s=1e9)
    sample = probe.combined()
    assert sample.lowest == "nodeA" and sample.cpu_util is not None
    assert sample.ram_available == lines[-1]["ram_available"]


def test_a_task_other_than_the_first_writes_its_own_exit_file_and_no_samples(
    tmp_path: Path,
) -> None:
    (tmp_path / VISIBLE_FILE).write_text("tok")
    p = _agent(tmp_path, "tok", "pass", SLURM_PROCID="3", SLURM_LOCALID="1", SLURMD_NODENAME="n2")
    assert p.returncode == 0
    assert json.loads((tmp_path / "exit.task3.json").read_text())["code"] == 0
    assert not (tmp_path / "exit.json").exists() and not (tmp_path / "probes.n2.jsonl").exists()


def test_a_run_dir_not_visible_stops_the_task_before_the_command(tmp_path: Path) -> None:
    (tmp_path / VISIBLE_FILE).write_text("another run's token")
    p = _agent(tmp_path, "tok", f"open({str(tmp_path / 'ran')!r}, 'w')", SLURMD_NODENAME="n1")
    assert p.returncode == NOT_VISIBLE_EXIT and not (tmp_path / "ran").exists()
    assert p.stderr.strip().count("\n") == 0 and "not visible from node n1" in p.stderr


def test_node_files_are_untrusted_and_stale_readings_are_dropped(tmp_path: Path) -> None:
    now = 1000.0
    good = {
        "t": now,
        "node": "a",
        "cpu_util": 0.9,
        "cpu_available": 0.95,
        "ram_available": 8 << 30,
        "gpus": [{"util": 0.5, "held": True}, {"util": 0.1, "held": False}],
    }
    idle = {
        **good,
        "node": "b",
        "cpu_util": 0.05,
        "cpu_available": 0.05,
        "ram_available": 2 << 30,
        "gpus": [{"sm_activity": 0.02, "held": True}],
    }
    (tmp_path / "probes.a.jsonl").write_text(
        json.dumps(good) + "\n[1,2]\n" + '{"node": "a", "t": "soon"}\n' + "x" * 70000 + "\n"
    )
    (tmp_path / "probes.b.jsonl").write_text(
        json.dumps({**idle, "cpu_util": 7.0}) + "\n" + json.dumps(idle) + "\n{half"
    )
    clock = [now + 1]
    probe = NodeProbe(tmp_path, stale_s=5, clock=lambda: clock[0])
    s = probe.combined()
    assert s.lowest == "b" and s.cpu_util == 0.05  # the idle node is the one judged
    assert s.ram_available == 2 << 30
    assert [(g.index, g.held) for g in s.gpus] == [(0, True), (1, False), (2, True)]
    assert probe.skipped == 3  # a list, a bad time, an oversized line; 7.0 is read as no figure
    with (tmp_path / "probes.b.jsonl").open("a") as f:  # the half line is completed later
        f.write('"t": 1003, "node": "b", "cpu_util": 0.5}\n')
    clock[0] = now + 20  # neither node wrote for 20 s: nothing fresh, no figure
    s = probe.combined()
    assert s.cpu_util is None and s.nodes == () and "no fresh sample" in (s.gpu_error or "")


def _spec(**watch: float) -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "q",
            "command": ["x"],
            "launcher": "slurm",
            "device": "cpu",
            "watch": {"util_grace_s": 5, "util_window_s": 4, "stall_s": 30, **watch},
        }
    )


def test_queue_time_is_never_judged_and_running_starts_the_clocks() -> None:
    m = RunMachine(_spec(), started_at=0.0)
    assert m.handle(Queued(1.0, "Resources", 60.0)) == []
    assert m.progress.snapshot()["queued"] == {"queued_s": 60, "reason": "Resources"}
    # an hour in the queue: no stall (no metrics), no utilisation verdict
    for t in range(2, 3600, 5):
        assert m.handle(Tick(float(t))) == []
        assert m.handle(ProbeSample(float(t), 0.0, 8 << 30, cpu_available=0.0)) == []
    assert m.status == "running" and m.waiting
    m.handle(Began(3600.0, "node1"))
    assert not m.waiting and m.progress.snapshot()["where"] == "node1"
    assert m.progress.snapshot()["queued"] is None
    acts = []
    for t in range(3601, 3620):  # idle once running: aborted after the grace and the window
        acts += m.handle(ProbeSample(float(t), 0.0, 8 << 30, cpu_available=0.0))
    assert m.status == "aborting"
    rule = next(a.finding.rule for a in acts if isinstance(a, RecordIncident))
    assert rule == "utilisation"


def test_scheduler_ends_are_incidents_linked_to_their_mistakes() -> None:
    m = RunMachine(_spec(), started_at=0.0)
    m.handle(Began(1.0))
    acts = m.handle(
        Exited(50.0, None, "", scheduler_state="TIMEOUT", scheduler_detail="time limit 00:01:00")
    )
    incident = next(a for a in acts if isinstance(a, RecordIncident))
    assert incident.finding.rule == "scheduler_timeout"
    assert "time limit 00:01:00" in incident.finding.summary and m.status == "failed"
    assert RULE_LINKS["scheduler_timeout"] == ("M-046",)
    assert RULE_LINKS["scheduler_oom"] == ("M-047",)
    finding = check_scheduler_end("NOT_VISIBLE", "/x, node n1", 97)
    assert finding is not None and finding.rule == "shared_fs"
    assert check_scheduler_end("COMPLETED", "", 0) is None  # the job's own end: judged as local
    assert check_scheduler_end(None, "", 1) is None
    # an abort the harness asked for ends "aborted", whatever Slurm calls it (CANCELLED)
    m = RunMachine(_spec(), started_at=0.0)
    m.handle(Began(1.0))
    m.handle(Tick(100.0))  # stall: no metrics for 99 s > 30
    assert m.status == "aborting"
    m.handle(Exited(101.0, None, "", scheduler_state="CANCELLED"))
    assert m.status == "aborted"


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
def test_a_state_for_the_jobs_own_end_is_no_scheduler_incident(state: str) -> None:
    assert SlurmState(state).ended and check_scheduler_end(state, "", 0) is None
