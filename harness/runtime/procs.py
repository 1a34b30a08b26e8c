"""The process layer of the supervisor: start jobs, recognise them, stop them (DESIGN section 5).

Every job process is started in its own session with the run marker ``HARNESS_RUN_ID=<run id>``
in its environment; its descendants inherit it. The supervisor stores a :class:`ProcRecord`
(PID, create time, run id) for each process it starts. Identity is the triple: a process is
only ever signalled when its marker matches the run and, for a recorded root, its create time
matches too, so a reused PID or an unrelated process with the same command line is never touched.

Stopping a job is escalation over the whole tree (root, its recursive children, and every
process carrying the run's marker, which finds descendants that moved to their own session or
were reparented to init): SIGINT so the job can checkpoint, wait, SIGTERM, wait, SIGKILL, then a
final sweep of marked processes. A zombie counts as gone.

Everything here is blocking; the supervisor runs it in a worker thread.

A job that cannot be started raises ``harness.errors.SpawnError`` with one line naming
the cause.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.errors import SpawnError
from harness.job.protocol import ENV_RUN_ID

MARKER_ENV = ENV_RUN_ID
CREATE_TIME_TOLERANCE_S = 0.01
_POLL_S = 0.05


@dataclass(frozen=True)
class ProcRecord:
    """What the supervisor stores for every process it starts."""

    pid: int
    create_time: float
    run_id: str


@dataclass(frozen=True)
class Escalation:
    """What :func:`terminate_tree` did: signals sent (name, number of processes), in order."""

    signals: list[tuple[str, int]]
    survivors: list[int]
    elapsed_s: float
    swept: list[int]  # PIDs SIGKILLed by the final sweep (appeared after the escalation began)


@dataclass(frozen=True)
class StaleKill:
    """One process of a finished run that :func:`sweep_stale` signalled."""

    pid: int
    run_id: str
    cmdline: tuple[str, ...]
    survived: bool


# -- starting --------------------------------------------------------------------------------


def spawn(
    argv: Sequence[str],
    *,
    run_id: str,
    cwd: Path,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start ``argv`` in a new session with the run marker; output is appended to the files.

    ``env`` is the job's whole environment; ``MARKER_ENV`` is added to it. The executable is
    looked up on the ``PATH`` of ``env``.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    if not argv:
        raise SpawnError("cannot start job: empty command")
    full_env = {**env, MARKER_ENV: run_id}
    try:
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise SpawnError(_start_error(exc, argv[0], cwd)) from None
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # cannot happen for an unreaped child; keep the boundary closed anyway
        proc.kill()
        proc.wait()
        raise SpawnError(f"cannot start job: {argv[0]!r} vanished at start") from None
    return proc, ProcRecord(pid=proc.pid, create_time=create_time, run_id=run_id)


def _start_error(exc: OSError, exe: str, cwd: Path) -> str:
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"cannot start job: working directory {os.fspath(cwd)!r} not found"
    if isinstance(exc, FileNotFoundError):
        where = "" if os.sep in exe else " on PATH"
        return f"cannot start job: {exe!r} not found{where}"
    if isinstance(exc, PermissionError):
        return f"cannot start job: {exe!r} is not executable (permission denied)"
    path = f" ({exc.filename})" if exc.filename is not None else ""
    return f"cannot start job: {exe!r}: {exc.strerror or exc}{path}"


# -- recognising -----------------------------------------------------------------------------


def same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid`` when it is the one created at ``create_time``, else None.

    PIDs are reused: the create time is what tells the process we started (or the
    supervisor that recorded itself) from a stranger that got its PID. A zombie is gone.
    """
    if pid is None or create_time is None:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None
    except psutil.Error:
        return None
    return proc if _alive(proc) else None


def _marker(proc: psutil.Process) -> str | None:
    try:
        value = proc.environ().get(MARKER_ENV)
    except psutil.Error:  # gone, zombie, or another user's process
        return None
    return value if isinstance(value, str) else None


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie; ``is_running`` also rules out a reused PID."""
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _root(rec: ProcRecord) -> psutil.Process | None:
    proc = same_process(rec.pid, rec.create_time)
    if proc is None or _marker(proc) != rec.run_id:
        return None
    return proc


def is_ours(rec: ProcRecord) -> bool:
    """The recorded process is alive (not a zombie), same create time, and carries the marker."""
    return _root(rec) is not None


def marked_processes(run_id: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``MARKER_ENV == run_id`` (ours excluded)."""
    if not run_id:
        return []
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid != me and _marker(proc) == run_id and _alive(proc):
            found.append(proc)
    return found


def _marked_by_run(run_ids: Collection[str]) -> dict[str, list[psutil.Process]]:
    """One scan of all processes: the live ones carrying any of ``run_ids`` as marker."""
    me = os.getpid()
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        marker = _marker(proc)
        if marker is not None and marker in run_ids and _alive(proc):
            found.setdefault(marker, []).append(proc)
    return found


def job_tree(
    rec: ProcRecord, *, marked: Iterable[psutil.Process] | None = None
) -> list[psutil.Process]:
    """The root (when it is ours), its marked descendants, and every process with the marker.

    ``marked`` passes the processes with this run's marker when the caller has scanned for
    them already (one scan for many runs); by default this scans.
    """
    tree: dict[int, psutil.Process] = {}
    root = _root(rec)
    if root is not None:
        tree[root.pid] = root
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            if _marker(child) == rec.run_id and _alive(child):
                tree.setdefault(child.pid, child)
    for proc in marked_processes(rec.run_id) if marked is None else marked:
        tree.setdefault(proc.pid, proc)
    return list(tree.values())


# -- stopping --------------------------------------------------------------------------------


class _Tracker:
    """Liveness for the processes of one escalation; reaps the root through its Popen."""

    def __init__(self, popen: subprocess.Popen[bytes] | None) -> None:
        self._popen = popen

    def alive(self, proc: psutil.Process) -> bool:
        if self._popen is not None and proc.pid == self._popen.pid:
            # poll() reaps our child and keeps its exit status for the caller.
            return self._popen.poll() is None and _alive(proc)
        return _alive(proc)

    def wait(self, procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        alive = [p for p in procs if self.alive(p)]
        while alive:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(_POLL_S, remaining))
            alive = [p for p in alive if self.alive(p)]
        return alive


def _signal_all(procs: Iterable[psutil.Process], sig: signal.Signals) -> list[psutil.Process]:
    sent = []
    for proc in procs:
        try:
            proc.send_signal(sig)  # psutil refuses a reused PID (create time checked)
        except psutil.Error:
            continue
        sent.append(proc)
    return sent


def _escalate(
    run_id: str,
    collect: Iterable[psutil.Process] | None,
    graces: Sequence[float],
    popen: subprocess.Popen[bytes] | None,
    rescan: ProcRecord | None,
) -> tuple[Escalation, dict[int, psutil.Process]]:
    """Signal SIGINT, SIGTERM, SIGKILL in turn to what is left, then sweep the marked ones."""
    start = time.monotonic()
    tracker = _Tracker(popen)
    signalled: dict[int, psutil.Process] = {}
    steps: list[tuple[str, int]] = []
    alive: dict[int, psutil.Process] = {p.pid: p for p in collect or ()}
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), graces, strict=True):
        # Rescan each step: the job may have started processes while shutting down.
        fresh = job_tree(rescan) if rescan is not None else marked_processes(run_id)
        for proc in fresh:
            alive.setdefault(proc.pid, proc)
        targets = [p for p in alive.values() if tracker.alive(p)]
        if not targets:
            alive = {}
            break
        sent = _signal_all(targets, sig)
        for proc in sent:
            signalled.setdefault(proc.pid, proc)
        if sent:
            steps.append((sig.name, len(sent)))
        alive = {p.pid: p for p in tracker.wait(targets, grace)}
    # Final sweep: descendants that slipped out (own session, reparented) after the last scan.
    late = [p for p in marked_processes(run_id) if p.pid not in alive and tracker.alive(p)]
    swept = _signal_all(late, signal.SIGKILL)
    for proc in swept:
        signalled.setdefault(proc.pid, proc)
        alive[proc.pid] = proc
    survivors = tracker.wait(alive.values(), graces[-1]) if alive else []
    escalation = Escalation(
        signals=steps,
        survivors=sorted(p.pid for p in survivors),
        elapsed_s=time.monotonic() - start,
        swept=sorted(p.pid for p in swept),
    )
    return escalation, signalled


def terminate_tree(
    rec: ProcRecord,
    *,
    int_grace: float = 10.0,
    term_grace: float = 5.0,
    kill_grace: float = 2.0,
    popen: subprocess.Popen[bytes] | None = None,
) -> Escalation:
    """Stop the job's whole process tree by escalation; returns what it took.

    Pass the job's ``Popen`` when you hold it: the root is then reaped through it, so its
    ``returncode`` stays right. Without it the root is never reaped here (``os.waitpid``
    behind a ``Popen``'s back would make ``Popen.poll()`` report 0 for a killed job); a
    zombie counts as gone either way.
    """
    if popen is not None and popen.pid != rec.pid:
        raise ValueError(f"popen is PID {popen.pid}, record is PID {rec.pid}")
    graces = (int_grace, term_grace, kill_grace)
    escalation, _ = _escalate(rec.run_id, None, graces, popen, rescan=rec)
    return escalation


def _cmdline(proc: psutil.Process) -> tuple[str, ...]:
    try:
        return tuple(proc.cmdline())
    except psutil.Error:
        return ()


def sweep_stale(
    records: Iterable[ProcRecord],
    *,
    active_run_ids: Collection[str],
    int_grace: float = 2.0,
    term_grace: float = 2.0,
    kill_grace: float = 2.0,
) -> list[StaleKill]:
    """Stop every process the harness started for a run that is over; return what was stopped.

    A run is over when its id is not in ``active_run_ids``. Its processes are the recorded
    roots that are still ours and every process carrying its marker; a process without the
    marker is never touched, whatever its command line.
    """
    stale: dict[str, list[ProcRecord]] = {}
    for rec in records:
        if rec.run_id and rec.run_id not in active_run_ids:
            stale.setdefault(rec.run_id, []).append(rec)
    kills: list[StaleKill] = []
    # One scan of every process's environment, however many finished runs there are.
    marked = _marked_by_run(set(stale)) if stale else {}
    for run_id, recs in stale.items():
        tree: dict[int, psutil.Process] = {}
        for rec in recs:
            for proc in job_tree(rec, marked=marked.get(run_id, [])):
                tree.setdefault(proc.pid, proc)
        if not tree:
            continue
        cmdlines = {pid: _cmdline(proc) for pid, proc in tree.items()}
        escalation, signalled = _escalate(
            run_id, tree.values(), (int_grace, term_grace, kill_grace), None, rescan=None
        )
        survivors = set(escalation.survivors)
        for pid, proc in sorted(signalled.items()):
            cmdline = cmdlines.get(pid) or _cmdline(proc)
            kills.append(StaleKill(pid, run_id, cmdline, survived=pid in survivors))
    return kills
