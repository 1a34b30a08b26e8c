"""The process layer with real processes and real signals; every test cleans up what it starts."""

from __future__ import annotations

import contextlib
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
from harness.runtime import cgroups
from harness.runtime.launchers.local import LocalJob, LocalLauncher
from harness.runtime.procs import (
    LEDGER_FILE,
    MARKER_ENV,
    Ledger,
    ProcRecord,
    _track,
    is_ours,
    marked_processes,
    read_ledger,
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
    # a process just forked has no command line until it has exec'd: wait for both
    _wait_for(lambda: bool(psutil.Process(decoy.pid).cmdline()))
    _wait_for(lambda: bool(psutil.Process(old_popen.pid).cmdline()))
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


# -- escapes: a grandchild without the marker, in its own session (M-025) --------------------

MODES = ["cgroup", "fallback"]


@dataclass
class Launched:
    """Jobs started through the local launcher; kills and removes all of it afterwards."""

    tmp: Path
    jobs: list[LocalJob] = field(default_factory=list)
    strays: list[psutil.Process] = field(default_factory=list)

    def start(self, mode: str, argv: Sequence[str]) -> LocalJob:
        run_id = _new_run_id()
        run_dir = self.tmp / run_id
        run_dir.mkdir()
        launcher = LocalLauncher(use_cgroups=mode == "cgroup")
        job = launcher.start(argv, run_id=run_id, run_dir=run_dir, cwd=self.tmp, env=BASE_ENV)
        self.jobs.append(job)
        if mode == "cgroup" and job.cgroup is None:
            pytest.skip("no writable cgroup v2 here")
        return job

    def grandchild(self, pidfile: Path) -> psutil.Process:
        proc = psutil.Process(_read_pids(pidfile, 1)["grandchild"])
        self.strays.append(proc)
        return proc

    def cleanup(self) -> None:
        for job in self.jobs:
            if job.cgroup is not None:
                cgroups.kill(job.cgroup)
            for proc in [*job.processes(), *self.strays]:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            if job.popen is not None:
                if job.popen.poll() is None:
                    job.popen.kill()
                job.popen.wait(timeout=10)
            if job.cgroup is not None:
                cgroups.remove(job.cgroup, timeout=5.0)


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Launched]:
    it = Launched(tmp_path)
    try:
        yield it
    finally:
        it.cleanup()


def _escape_job(tmp_path: Path, mode: str = "fallback") -> tuple[list[str], Path, Path]:
    """The escaping job. For the cgroup, the hardest case: a double fork, never sampled."""
    pidfile, release = tmp_path / "pids.txt", tmp_path / "release"
    fork = "double" if mode == "cgroup" else "single"
    return (
        [sys.executable, str(JOBS / "escape.py"), str(pidfile), str(release), fork],
        pidfile,
        release,
    )


def _assert_escaped(grandchild: psutil.Process, job: LocalJob) -> None:
    """The grandchild is out of reach of the marker and the job's session."""
    _wait_for(lambda: MARKER_ENV not in grandchild.environ())  # after its execve
    assert os.getsid(grandchild.pid) not in (os.getsid(job.record.pid), os.getsid(0))


@pytest.mark.parametrize("mode", MODES)
def test_abort_stops_a_grandchild_that_dropped_marker_and_session(
    mode: str, launched: Launched, tmp_path: Path
) -> None:
    argv, pidfile, _ = _escape_job(tmp_path, mode)
    job = launched.start(mode, argv)
    grandchild = launched.grandchild(pidfile)
    _assert_escaped(grandchild, job)
    if mode == "fallback":
        assert grandchild.pid in [p.pid for p in job.processes()]  # what the probes sample
    else:
        assert grandchild.ppid() != job.record.pid  # reparented: no tree leads to it

    esc = job.terminate(int_grace=0.5, term_grace=0.5)

    assert _gone(grandchild.pid)
    assert esc.survivors == []
    assert ("SIGKILL", 1) in esc.signals  # it ignores SIGINT and SIGTERM
    assert job.poll()[0]
    if job.cgroup is not None:
        assert not job.cgroup.exists()  # removed once empty


@pytest.mark.parametrize("mode", MODES)
def test_sweep_after_a_run_stops_the_grandchild_it_left(
    mode: str, launched: Launched, tmp_path: Path
) -> None:
    argv, pidfile, release = _escape_job(tmp_path, mode)
    job = launched.start(mode, argv)
    grandchild = launched.grandchild(pidfile)
    _assert_escaped(grandchild, job)
    if mode == "fallback":
        job.processes()  # the supervisor samples about once a second while the job runs
    release.touch()
    _wait_for(lambda: job.poll()[0])
    # The run is over; the grandchild lives on, reparented, with no marker, in no session of ours.
    assert grandchild.is_running() and grandchild.ppid() != job.record.pid
    assert grandchild.pid not in [p.pid for p in marked_processes(job.record.run_id)]

    kills = sweep_stale(
        [job.record],
        active_run_ids=(),
        runs_dir=job.run_dir.parent,  # as preflight calls it
        int_grace=0.5,
        term_grace=0.5,
        kill_grace=2.0,
    )

    assert [(k.pid, k.survived) for k in kills] == [(grandchild.pid, False)]
    assert _gone(grandchild.pid)
    if job.cgroup is not None:
        assert not job.cgroup.exists()


def test_without_a_cgroup_the_session_finds_a_reparented_grandchild_never_sampled(
    launched: Launched, tmp_path: Path
) -> None:
    pidfile, release = tmp_path / "pids.txt", tmp_path / "release"
    argv = [sys.executable, str(JOBS / "escape.py"), str(pidfile), str(release), "orphan"]
    job = launched.start("fallback", argv)
    grandchild = launched.grandchild(pidfile)
    _wait_for(lambda: MARKER_ENV not in grandchild.environ())
    assert grandchild.ppid() != job.record.pid and os.getsid(grandchild.pid) == job.record.pid

    esc = job.terminate(int_grace=0.5, term_grace=0.5)

    assert _gone(grandchild.pid)
    assert esc.survivors == []


def test_the_ledger_keeps_each_descendant_once_and_only_the_living_past_its_bound(
    tmp_path: Path, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_track, "_LEDGER_COMPACT_AT", 3)
    path = tmp_path / LEDGER_FILE
    ledger = Ledger(path)
    short = [subprocess.Popen([sys.executable, "-c", ""]) for _ in range(3)]
    dead = [psutil.Process(p.pid) for p in short]
    for popen in short:
        popen.wait(timeout=30)
    live = psutil.Process(jobs.start_unmarked(_sleeper()).pid)

    ledger.note(dead)
    ledger.note(dead)  # seen already: not written twice
    assert len(path.read_text().splitlines()) == 3
    ledger.note([live])  # past the bound: the dead are dropped from the file

    assert read_ledger(path) == {(live.pid, live.create_time())}
    assert [p.pid for p in Ledger(path).living()] == [live.pid]


def test_a_ledger_the_job_broke_or_replaced_by_a_fifo_reads_as_what_is_valid(
    tmp_path: Path,
) -> None:
    path = tmp_path / LEDGER_FILE
    lines = ['{"pid": 7, "create_time": 1.5}', "not json", '{"pid": true, "create_time": 1}']
    lines += ['{"pid": 8, "create_time": 1e999}', "[" * 100_000, '{"pid": 9}', "[1, 2]"]
    path.write_text("\n".join(lines) + "\n")
    assert read_ledger(path) == {(7, 1.5)}

    path.unlink()
    os.mkfifo(path)  # opening it to read or append would block
    ledger = Ledger(path)
    ledger.note([psutil.Process()])
    assert read_ledger(path) == set()


def test_a_run_that_ends_cleanly_leaves_no_cgroup_and_one_that_cannot_start_none_either(
    launched: Launched, tmp_path: Path
) -> None:
    job = launched.start("cgroup", [sys.executable, "-c", "pass"])
    assert job.cgroup is not None and job.cgroup.exists()
    _wait_for(lambda: job.poll()[0])

    assert job.poll() == (True, 0)
    assert not job.cgroup.exists()

    run_dir = tmp_path / "never"
    run_dir.mkdir()
    with pytest.raises(ProcError, match="working directory"):
        LocalLauncher().start(
            ["true"], run_id="never-1", run_dir=run_dir, cwd=tmp_path / "nowhere", env=BASE_ENV
        )
    assert cgroups.find("never-1") is None
    assert not (run_dir / cgroups.RECORD_FILE).exists()


def test_an_adopted_handle_finds_the_cgroup_of_the_run(launched: Launched, tmp_path: Path) -> None:
    argv, pidfile, _ = _escape_job(tmp_path, "cgroup")
    job = launched.start("cgroup", argv)
    grandchild = launched.grandchild(pidfile)
    _assert_escaped(grandchild, job)
    assert (job.run_dir / cgroups.RECORD_FILE).read_text().strip() == str(job.cgroup)

    adopted = LocalLauncher().adopt(job.record, job.run_dir)  # a new supervisor, or `harness abort`
    esc = adopted.terminate(int_grace=0.5, term_grace=0.5)

    assert adopted.cgroup == job.cgroup
    assert _gone(grandchild.pid)
    assert esc.survivors == []


def test_fallback_sweep_never_signals_a_stranger_the_ledger_names_wrongly(
    launched: Launched, jobs: Jobs, tmp_path: Path
) -> None:
    argv, pidfile, release = _escape_job(tmp_path)
    job = launched.start("fallback", argv)
    job.processes()
    release.touch()
    _wait_for(lambda: job.poll()[0])
    launched.grandchild(pidfile).kill()
    stranger = jobs.start_unmarked(_sleeper())  # unmarked, own session, never recorded
    ctime = psutil.Process(stranger.pid).create_time()
    with open(job.run_dir / LEDGER_FILE, "a") as f:  # its PID, but not its create time
        f.write(f'{{"pid": {stranger.pid}, "create_time": {ctime - 3.0}}}\n{{"pid": "x"}}\n[[\n')

    kills = sweep_stale([job.record], active_run_ids=(), runs_dir=tmp_path, int_grace=0.5)

    assert stranger.pid not in [k.pid for k in kills]
    assert stranger.poll() is None
