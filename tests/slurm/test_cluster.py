"""The single-node Slurm of ``cluster.sh`` behaves as the Slurm launcher expects.

Real daemons, real ``sbatch``/``squeue``/``scontrol``/``scancel``: batch jobs complete and
write their files, a job wanting every CPU waits for ``Resources`` behind a running one,
a held job waits as ``JobHeldUser``, ``scancel --signal=INT --full`` reaches a batch
script's trap (and its children), and ``cluster.sh up`` is fast and idempotent.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.slurm.conftest import SlurmCluster, cluster_sh

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster on this machine


def run(*argv: str, timeout: float = 30) -> str:
    """The stdout of a Slurm command that must succeed."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr.strip()}"
    return done.stdout.strip()


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}\n{cluster_state()}")
        time.sleep(0.1)


def cluster_state() -> str:
    """The node and every job, for a failure message."""
    node = subprocess.run(
        ["sinfo", "-h", "-o", "%n %T %C"], capture_output=True, text=True, timeout=30
    )
    queue = ["squeue", "-h", "-t", "all", "-o", "%i %j %T %r %M"]
    jobs = subprocess.run(queue, capture_output=True, text=True, timeout=30)
    return f"sinfo: {node.stdout.strip()}\nsqueue -t all:\n{jobs.stdout.rstrip()}"


def sbatch(tmp_path: Path, *args: str) -> str:
    """Submit a batch job running in tmp_path; its id."""
    out = run("sbatch", "--parsable", "-D", str(tmp_path), "-o", str(tmp_path / "%j.out"), *args)
    return out.split(";")[0]


def job_state(job_id: str) -> str:
    """JobState from ``scontrol show job`` (finished jobs stay visible: MinJobAge)."""
    out = run("scontrol", "-o", "show", "job", job_id)
    match = re.search(r"\bJobState=(\S+)", out)
    assert match, out
    return match.group(1)


def queue_line(job_id: str) -> str:
    """``%T %r`` (state and reason) from squeue, e.g. ``PENDING Resources``."""
    return run("squeue", "-h", "-j", job_id, "-o", "%T %r")


def sleeper(tmp_path: Path, name: str, *args: str) -> str:
    """Submit a 60 s sleeper; its id once its script runs.

    A job cancelled while slurmd is still launching it can miss the TERM and linger
    COMPLETING until the KILL KillWait (10 s) later, and Slurm starts nothing on a node
    while a job is completing there: so a sleeper is cancelled only once it runs.
    """
    started = tmp_path / f"{name}.started"
    job_id = sbatch(tmp_path, *args, "--wrap", f"touch {started}; sleep 60")
    wait_for(f"job {job_id} ({name}) running its script", started.exists)
    return job_id


def live(ids: list[str]) -> str:
    """Those of the jobs still pending, running or completing."""
    argv = ["squeue", "-h", "-t", "PD,R,CG,S", "-j", ",".join(ids), "-o", "%i"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """Job ids a test submits; at teardown every one is cancelled, whatever happened,
    and gone (not even completing, which would keep the next test's jobs waiting)."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
        wait_for(f"jobs {ids} gone", lambda: not live(ids), timeout=30)


def test_a_batch_job_completes_and_writes_its_file(
    slurm_cluster: SlurmCluster, tmp_path: Path, jobs: list[str]
) -> None:
    out = tmp_path / "hi.txt"
    jobs.append(job_id := sbatch(tmp_path, "--wrap", f"echo hi > {out}"))
    wait_for(f"job {job_id} COMPLETED", lambda: job_state(job_id) == "COMPLETED")
    assert out.read_text() == "hi\n"
    node = run("scontrol", "-o", "show", "job", job_id)
    assert f"NodeList={slurm_cluster.node}" in node
    assert f"Partition={slurm_cluster.partition}" in node


def test_a_job_wanting_every_cpu_waits_for_resources_behind_a_running_one(
    slurm_cluster: SlurmCluster, tmp_path: Path, jobs: list[str]
) -> None:
    jobs.append(small := sleeper(tmp_path, "small", "--cpus-per-task=1"))
    cpus = f"--cpus-per-task={slurm_cluster.cpus}"
    jobs.append(big := sbatch(tmp_path, cpus, "--wrap", "true"))
    # the reason is "None" until the scheduler has looked at the job
    wait_for(f"job {big} waits for Resources", lambda: queue_line(big) == "PENDING Resources")
    assert job_state(small) == "RUNNING"
    run("scancel", small, big)
    wait_for(f"job {big} CANCELLED", lambda: job_state(big) == "CANCELLED")


def test_two_one_cpu_jobs_run_side_by_side(
    slurm_cluster: SlurmCluster, tmp_path: Path, jobs: list[str]
) -> None:
    if slurm_cluster.cpus < 2:
        pytest.skip("a one-CPU node runs one 1-CPU job at a time")
    jobs.append(a := sleeper(tmp_path, "a", "--cpus-per-task=1"))
    jobs.append(b := sleeper(tmp_path, "b", "--cpus-per-task=1"))
    assert job_state(a) == job_state(b) == "RUNNING"


def test_a_held_job_waits_as_held_by_its_user(
    slurm_cluster: SlurmCluster, tmp_path: Path, jobs: list[str]
) -> None:
    jobs.append(job_id := sbatch(tmp_path, "--hold", "--wrap", "true"))
    wait_for(f"job {job_id} held", lambda: queue_line(job_id) == "PENDING JobHeldUser")
    run("scontrol", "release", job_id)
    wait_for(f"job {job_id} COMPLETED", lambda: job_state(job_id) == "COMPLETED")


# The batch script traps INT; its child (a Python process) catches INT too, so that the
# test sees which of them the signal reached.
TRAPPING_SCRIPT = """\
#!/bin/bash
trap 'echo INT > {dir}/shell.int; exit 0' INT
{python} -c '
import signal, sys, time
def caught(*_):
    open("{dir}/child.int", "w").write("INT\\n")
    sys.exit(0)
signal.signal(signal.SIGINT, caught)
open("{dir}/child.ready", "w").write("ready\\n")
time.sleep(60)
' &
wait
"""


def test_scancel_signal_int_full_reaches_the_batch_shell_and_its_children(
    slurm_cluster: SlurmCluster, tmp_path: Path, jobs: list[str]
) -> None:
    script = tmp_path / "trap.sh"
    script.write_text(TRAPPING_SCRIPT.format(dir=tmp_path, python=sys.executable))
    jobs.append(job_id := sbatch(tmp_path, str(script)))
    wait_for("the job's child is running", (tmp_path / "child.ready").exists, timeout=30)
    run("scancel", "--signal=INT", "--full", job_id)
    wait_for("the shell's trap ran", (tmp_path / "shell.int").exists)
    wait_for("the child caught INT", (tmp_path / "child.int").exists)
    # the trap exits 0: the job ends as if it had finished
    wait_for(f"job {job_id} COMPLETED", lambda: job_state(job_id) == "COMPLETED")


def test_up_again_is_fast_and_status_says_up(slurm_cluster: SlurmCluster) -> None:
    started = time.monotonic()
    up = cluster_sh("up", timeout=60)
    took = time.monotonic() - started
    assert up.returncode == 0, up.stdout
    last = up.stdout.strip().splitlines()[-1]
    assert last == f"cluster.sh: slurm up: node {slurm_cluster.node}, {slurm_cluster.cpus} CPUs"
    assert took < 5, f"an 'up' of a cluster already up took {took:.1f} s"
    status = cluster_sh("status", timeout=60)
    assert status.returncode == 0, status.stdout


def test_down_then_up_brings_it_back(slurm_cluster: SlurmCluster) -> None:
    # `down` cancels every job on the cluster: not while someone else's jobs are queued
    if run("squeue", "-h", "-o", "%i"):
        pytest.skip("jobs are queued on the cluster; 'down' would cancel them")
    down = cluster_sh("down", timeout=120)
    assert down.returncode == 0, down.stdout
    assert cluster_sh("status", timeout=60).returncode != 0
    assert cluster_sh("down", timeout=120).returncode == 0  # idempotent
    up = cluster_sh("up", timeout=300)
    assert up.returncode == 0, up.stdout
    assert cluster_sh("status", timeout=60).returncode == 0
