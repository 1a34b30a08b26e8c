"""The process layer with real processes and real signals; every test cleans up what it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from harness.errors import SpawnError as ProcError
from harness.runtime.procs import (
    MARKER_ENV,
    ProcRecord,
    is_ours,
    marked_processes,
    spawn,
    sweep_stale,
    terminate_tree,
)

JOBS = Path(__file__).parent / "jobs"
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}


def _new_run_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class Jobs:
    """Starts processes for a test and kills all of them (marked or not) afterwards."""

    tmp: Path
    run_ids: list[str] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, argv: Sequence[str], run_id: str | None = None
    ) -> tuple[subprocess.Popen[bytes], ProcRecord]:
        run_id = run_id or _new_run_id()
        self.run_ids.append(run_id)
        popen, rec = spawn(
            argv,
            run_id=run_id,
            cwd=self.tmp,
            env=BASE_ENV,
            stdout_path=self.tmp / f"{run_id}.out",
            stderr_path=self.tmp / f"{run_id}.err",
        )
        self.popens.append(popen)
        return popen, rec

    def start_unmarked(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(list(argv), env=BASE_ENV, start_new_session=True)
        self.popens.append(popen)
        return popen

    def cleanup(self) -> None:
        for run_id in self.run_ids:
            for proc in marked_processes(run_id):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
            popen.wait(timeout=10)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    j = Jobs(tmp_path)
    try:
        yield j
    finally:
        j.cleanup()


def _sleeper() -> list[str]:
    return [sys.executable, str(JOBS / "sleeper.py"), "60"]


# -- spawn -----------------------------------------------------------------------------------


def test_spawn_runs_job_in_new_session_with_marker(jobs: Jobs) -> None:
    popen, rec = jobs.start(_sleeper())

    assert os.getsid(popen.pid) == popen.pid != os.getsid(0)
    proc = psutil.Process(popen.pid)
    assert proc.environ()[MARKER_ENV] == rec.run_id
    assert rec.pid == popen.pid
    assert rec.create_time == pytest.approx(proc.create_time(), abs=0.01)


def test_spawn_appends_output_to_log_files_and_keeps_env(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    out.write_text("earlier run\n")
    code = (
        "import os, sys; print(os.environ['HARNESS_RUN_ID'], os.environ['FOO']);"
        "print(repr(sys.stdin.read())); print('to stderr', file=sys.stderr)"
    )
    popen, rec = spawn(
        [sys.executable, "-c", code],
        run_id="run-logs",
        cwd=tmp_path,
        env={**BASE_ENV, "FOO": "bar"},
        stdout_path=out,
        stderr_path=err,
    )

    assert popen.wait(timeout=30) == 0
    assert rec.run_id == "run-logs"
    assert out.read_text() == "earlier run\nrun-logs bar\n''\n"
    assert err.read_text() == "to stderr\n"


def test_spawn_missing_executable_is_a_one_line_proc_error(tmp_path: Path) -> None:
    with pytest.raises(ProcError) as info:
        spawn(
            ["nosuchcmd-7f3a", "--flag"],
            run_id="run-x",
            cwd=tmp_path,
            env=BASE_ENV,
            stdout_path=tmp_path / "o",
            stderr_path=tmp_path / "e",
        )
    assert str(info.value) == "cannot start job: 'nosuchcmd-7f3a' not found on PATH"


def test_spawn_missing_working_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ProcError) as info:
        spawn(
            _sleeper(),
            run_id="run-x",
            cwd=missing,
            env=BASE_ENV,
            stdout_path=tmp_path / "o",
            stderr_path=tmp_path / "e",
        )
    assert str(info.value) == f"cannot start job: working directory {str(missing)!r} not found"


# -- identity --------------------------------------------------------------------------------


def test_is_ours_only_for_the_live_marked_process_with_its_create_time(jobs: Jobs) -> None:
    popen, rec = jobs.start(_sleeper())
    decoy = jobs.start_unmarked(_sleeper())
    decoy_ct = psutil.Process(decoy.pid).create_time()

    assert is_ours(rec)
    assert not is_ours(ProcRecord(rec.pid, rec.create_time + 5.0, rec.run_id))  # PID reused
    assert not is_ours(ProcRecord(rec.pid, rec.create_time, "another-run"))
    assert not is_ours(ProcRecord(decoy.pid, decoy_ct, rec.run_id))  # no marker

    popen.kill()
    _wait_for(lambda: _gone(popen.pid))  # a zombie is not ours any more
    assert not is_ours(rec)
    popen.wait(timeout=10)
    assert not is_ours(rec)


def test_terminate_tree_never_signals_an_unmarked_process(jobs: Jobs) -> None:
    decoy = jobs.start_unmarked(_sleeper())
    rec = ProcRecord(decoy.pid, psutil.Process(decoy.pid).create_time(), _new_run_id())

    esc = terminate_tree(rec, int_grace=0.5, term_grace=0.5, kill_grace=0.5)

    assert esc.signals == []
    assert decoy.poll() is None


# -- escalation ------------------------------------------------------------------------------


def _read_pids(pidfile: Path, count: int) -> dict[str, int]:
    def complete() -> bool:
        return pidfile.exists() and len(pidfile.read_text().splitlines()) >= count

    _wait_for(complete)
    return {role: int(pid) for role, pid in (ln.split() for ln in pidfile.read_text().splitlines())}


def test_terminate_tree_reaches_grandchild_in_its_own_session(jobs: Jobs, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids.txt"
    popen, rec = jobs.start([sys.executable, str(JOBS / "spawn_tree.py"), str(pidfile)])
    pids = _read_pids(pidfile, 3)
    grandchild = pids["grandchild"]
    assert os.getsid(grandchild) == grandchild != os.getsid(popen.pid)  # left the job's session

    esc = terminate_tree(rec, int_grace=2.0, term_grace=2.0, kill_grace=2.0, popen=popen)

    assert [pid for pid in pids.values() if not _gone(pid)] == []
    assert esc.survivors == []
    # root and child stop on SIGINT; the grandchild ignores it and needs SIGTERM
    assert esc.signals == [("SIGINT", 3), ("SIGTERM", 1)]
    assert popen.returncode is not None


def test_terminate_tree_kills_a_job_that_ignores_int_and_term(jobs: Jobs, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    popen, rec = jobs.start([sys.executable, str(JOBS / "ignore_signals.py"), str(ready)])
    _wait_for(ready.exists)

    esc = terminate_tree(rec, int_grace=1.0, term_grace=1.0, kill_grace=1.0, popen=popen)

    assert esc.signals == [("SIGINT", 1), ("SIGTERM", 1), ("SIGKILL", 1)]
    assert esc.survivors == []
    assert popen.returncode == -signal.SIGKILL


def test_terminate_tree_lets_a_job_checkpoint_on_sigint(jobs: Jobs, tmp_path: Path) -> None:
    ready, checkpoint = tmp_path / "ready", tmp_path / "ckpt"
    argv = [sys.executable, str(JOBS / "checkpoint_on_sigint.py"), str(ready), str(checkpoint)]
    popen, rec = jobs.start(argv)
    _wait_for(ready.exists)

    # A generous grace: on a loaded machine the handler can take seconds to be scheduled;
    # the assertion is that SIGINT alone was enough, not how fast.
    esc = terminate_tree(rec, int_grace=30.0, term_grace=1.0, kill_grace=1.0, popen=popen)

    assert esc.signals == [("SIGINT", 1)]
    assert checkpoint.read_text() == "step 42\n"
    assert popen.returncode == 0  # reaped through the Popen: the real exit status survives


# -- stale processes -------------------------------------------------------------------------


def test_sweep_stale_kills_old_run_but_not_decoy_or_active_run(jobs: Jobs) -> None:
    old_popen, old_rec = jobs.start(_sleeper(), run_id=_new_run_id())
    decoy = jobs.start_unmarked(_sleeper())
    active_popen, active_rec = jobs.start(_sleeper())
    assert psutil.Process(decoy.pid).cmdline() == psutil.Process(old_popen.pid).cmdline()
    # a record of the old run pointing at the decoy (as after PID reuse) must not matter
    decoy_rec = ProcRecord(decoy.pid, psutil.Process(decoy.pid).create_time(), old_rec.run_id)

    kills = sweep_stale(
        [old_rec, decoy_rec, active_rec],
        active_run_ids={active_rec.run_id},
        int_grace=1.0,
        term_grace=1.0,
        kill_grace=1.0,
    )

    assert [(k.pid, k.run_id, k.cmdline, k.survived) for k in kills] == [
        (old_popen.pid, old_rec.run_id, tuple(_sleeper()), False)
    ]
    assert _gone(old_popen.pid)
    assert decoy.poll() is None
    assert active_popen.poll() is None


def test_sweep_stale_kills_orphans_of_a_dead_root(jobs: Jobs, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids.txt"
    popen, rec = jobs.start([sys.executable, str(JOBS / "spawn_tree.py"), str(pidfile)])
    pids = _read_pids(pidfile, 3)
    popen.kill()  # the old supervisor died with its job's root; the descendants live on
    popen.wait(timeout=10)
    assert not is_ours(rec)

    kills = sweep_stale([rec], active_run_ids=(), int_grace=1.0, term_grace=1.0, kill_grace=1.0)

    assert sorted(k.pid for k in kills) == sorted([pids["child"], pids["grandchild"]])
    assert all(_gone(pid) for pid in pids.values())
