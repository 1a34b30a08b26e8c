"""The process layer of the supervisor: start jobs, recognise them, stop them (DESIGN section 5).

Every job process is started in its own session with the run marker ``HARNESS_RUN_ID=<run id>``
in its environment; its descendants inherit it. The supervisor stores a :class:`ProcRecord`
(PID, create time, run id) for each process it starts. A process is only ever signalled when
it is proven to be the run's, in one of these ways (and never for its command line):

- it is a recorded root: PID and create time match the record and it carries the marker;
- it is a live descendant of such a root (``children(recursive=True)``);
- it carries the run's marker (this finds descendants that moved to their own session or
  were reparented to init, as long as they kept their environment);
- it is in the run's own cgroup v2 (:mod:`harness.runtime.cgroups`, where the kernel lets
  us have one): a process cannot leave it by dropping its environment, calling
  ``setsid()`` or being reparented, so with a cgroup nothing the job starts escapes;
- it is in the job's session (the root is a session leader, so the session id is the
  root's PID) while a recorded process of the run is still in that session: the kernel
  never reuses a session id that a live process still has, so the session is still ours;
- its PID and create time match a recorded descendant: every time the launcher lists
  the job's processes (about once a second, for the probes) it appends each one not
  seen before to ``<run dir>/descendants.jsonl`` (the :class:`Ledger`), and a recorded
  descendant stays ours after it lost the marker, left the session or was reparented.

The limit, honestly: without a cgroup, a grandchild that drops its environment *and*
leaves the session (a daemonising double fork with a clean environment) between two
listings is never recorded, and so never signalled. Only the cgroup catches that.

Stopping a job is escalation over everything above: SIGINT so the job can checkpoint,
wait, SIGTERM, wait, SIGKILL (rescanning before each step, since a job may start processes
while it shuts down), then a final sweep that SIGKILLs what appeared meanwhile and, with a
cgroup, ``cgroup.kill`` for anything left in it; the emptied cgroup is removed. A zombie
counts as gone. The stale sweep before each launch does the same for runs that are over,
finding their cgroup and ledger in their run dirs (and the cgroup by its name).

Everything here is blocking; the supervisor runs it in a worker thread.

A job that cannot be started raises ``harness.errors.SpawnError`` with one line naming
the cause.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness._atomic import write_text_atomic
from harness.errors import SpawnError
from harness.job.protocol import ENV_RUN_ID
from harness.runtime import cgroups

MARKER_ENV = ENV_RUN_ID
CREATE_TIME_TOLERANCE_S = 0.01
LEDGER_FILE = "descendants.jsonl"  # in the run dir: one {"pid", "create_time"} per line
_LEDGER_MAX_BYTES = 1 << 20  # what is read back of a ledger (it is the job's dir)
_LEDGER_COMPACT_AT = 512  # entries; past this, dead ones are dropped from the file
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
    """The root (when it is ours), all its live descendants, and every process with the marker.

    ``marked`` passes the processes with this run's marker when the caller has scanned for
    them already (one scan for many runs); by default this scans.
    """
    tree: dict[int, psutil.Process] = {}
    _add(tree, _descendants(_root(rec)))
    _add(tree, marked_processes(rec.run_id) if marked is None else marked)
    return list(tree.values())


def _descendants(root: psutil.Process | None) -> list[psutil.Process]:
    """``root`` and its live descendants; [] for no root."""
    if root is None:
        return []
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    return [root, *(c for c in children if _alive(c))]


def _add(into: dict[int, psutil.Process], procs: Iterable[psutil.Process]) -> None:
    for proc in procs:
        into.setdefault(proc.pid, proc)


# -- tracking what left the tree (cgroup, session, ledger) ---------------------------------


@dataclass(frozen=True)
class Tracking:
    """Where a run's processes are found besides its tree and its marker (module doc)."""

    cgroup: Path | None = None  # the run's own cgroup v2, when it has one
    ledger: Path | None = None  # ``<run dir>/descendants.jsonl``

    @classmethod
    def of_run(cls, run_dir: Path, run_id: str) -> Tracking:
        """What the run dir says: the cgroup recorded there (else one named for the run)."""
        cgroup = cgroups.read_record(run_dir, run_id) or cgroups.find(run_id)
        return cls(cgroup=cgroup, ledger=run_dir / LEDGER_FILE)


_Key = tuple[int, float]


def _key(proc: psutil.Process) -> _Key | None:
    try:
        return proc.pid, float(proc.create_time())
    except psutil.Error:
        return None


def read_ledger(path: Path | None) -> set[_Key]:
    """The (PID, create time) pairs in a ledger; bad lines are skipped, a bad file is empty."""
    data = cgroups.read_regular(path, _LEDGER_MAX_BYTES) if path is not None else None
    keys: set[_Key] = set()
    for line in (data or b"").splitlines():
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(entry, dict):
            continue
        pid, ctime = entry.get("pid"), entry.get("create_time")
        if type(pid) is not int or pid <= 0 or isinstance(ctime, bool):
            continue
        if isinstance(ctime, int | float) and math.isfinite(ctime):
            keys.add((pid, float(ctime)))
    return keys


def _living(keys: Iterable[_Key]) -> list[psutil.Process]:
    """The processes of ``keys`` that are still alive with the same create time."""
    return [p for p in (same_process(pid, ctime) for pid, ctime in keys) if p is not None]


class Ledger:
    """The descendants of one run seen so far, kept in ``<run dir>/descendants.jsonl``.

    Appending never raises (a full disk or a FIFO planted by the job degrades to an
    in-memory record); past ``_LEDGER_COMPACT_AT`` entries the file is rewritten with the
    live ones only, so a job that starts many short-lived processes keeps it small.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen = read_ledger(path)
        self._compact_at = max(_LEDGER_COMPACT_AT, 2 * len(self._seen))

    def note(self, procs: Iterable[psutil.Process]) -> None:
        """Record every process in ``procs`` not recorded before."""
        new = []
        for proc in procs:
            key = _key(proc)
            if key is not None and key not in self._seen:
                self._seen.add(key)
                new.append(key)
        if not new:
            return
        if len(self._seen) > self._compact_at:
            self._seen = {k for k in (_key(p) for p in _living(self._seen)) if k is not None}
            self._compact_at = max(_LEDGER_COMPACT_AT, 2 * len(self._seen))
            self._write(sorted(self._seen), replace=True)
        else:
            self._write(new, replace=False)

    def living(self) -> list[psutil.Process]:
        """The recorded processes still alive with their recorded create time."""
        return _living(self._seen)

    def _write(self, keys: Sequence[_Key], *, replace: bool) -> None:
        if self.path is None:
            return
        text = "".join(json.dumps({"pid": pid, "create_time": ct}) + "\n" for pid, ct in keys)
        try:
            if replace:
                write_text_atomic(self.path, text)
            else:
                _append_regular(self.path, text)
        except OSError:
            pass  # kept in memory; the sweep then has only the cgroup, session and marker


def _append_regular(path: Path, text: str) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _cgroup_members(cgroup: Path) -> list[psutil.Process]:
    """The live processes in ``cgroup``, each proven a member after its identity was taken."""
    me = os.getpid()
    found = {}
    for pid in cgroups.members(cgroup):
        if pid == me:
            continue
        try:
            found[pid] = psutil.Process(pid)  # takes the create time
        except psutil.Error:
            continue
    still = set(cgroups.members(cgroup))  # a PID reused in between is not in it any more
    return [p for pid, p in found.items() if pid in still and _alive(p)]


def _session_members(sid: int, born_after: float) -> list[psutil.Process]:
    """Live processes in session ``sid`` created no earlier than ``born_after``."""
    me = os.getpid()
    found = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            if os.getsid(pid) != sid:
                continue
            proc = psutil.Process(pid)
            if proc.create_time() + CREATE_TIME_TOLERANCE_S < born_after:
                continue
        except (OSError, psutil.Error):
            continue
        if _alive(proc):
            found.append(proc)
    return found


def _in_session(proc: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(proc.pid) == sid and _alive(proc)
    except OSError:
        return False


def tracked(
    rec: ProcRecord, tracking: Tracking, *, ledger: Ledger | None = None
) -> list[psutil.Process]:
    """Every live process of the run except the marked strays (module doc), no environ read.

    The root and its descendants, the members of the run's cgroup, the job's session while
    a recorded process is still in it, and the recorded descendants still alive. ``ledger``
    is the handle's own (kept in memory); by default the file is read.
    """
    found: dict[int, psutil.Process] = {}
    root = _root(rec)
    recorded = (ledger or Ledger(tracking.ledger)).living()
    _add(found, _descendants(root))
    if tracking.cgroup is not None:
        _add(found, _cgroup_members(tracking.cgroup))
    anchors = [root] if root is not None else []
    if any(_in_session(p, rec.pid) for p in [*anchors, *recorded]):
        _add(found, _session_members(rec.pid, rec.create_time))
    _add(found, recorded)
    found.pop(os.getpid(), None)
    return list(found.values())


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
    collect: Iterable[psutil.Process],
    graces: Sequence[float],
    popen: subprocess.Popen[bytes] | None,
    scan: Callable[[], Iterable[psutil.Process]],
    cgroup: Path | None,
) -> tuple[Escalation, dict[int, psutil.Process]]:
    """SIGINT, SIGTERM, SIGKILL in turn to what is left, a final sweep, then the cgroup.

    ``scan`` lists the run's processes now (only proven ones); it runs before each step
    and once more at the end. ``cgroup`` is emptied with ``cgroup.kill`` and removed.
    """
    start = time.monotonic()
    tracker = _Tracker(popen)
    signalled: dict[int, psutil.Process] = {}
    steps: list[tuple[str, int]] = []
    alive: dict[int, psutil.Process] = {p.pid: p for p in collect}
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), graces, strict=True):
        # Rescan each step: the job may have started processes while shutting down.
        _add(alive, scan())
        targets = [p for p in alive.values() if tracker.alive(p)]
        if not targets:
            alive = {}
            break
        sent = _signal_all(targets, sig)
        _add(signalled, sent)
        if sent:
            steps.append((sig.name, len(sent)))
        alive = {p.pid: p for p in tracker.wait(targets, grace)}
    # Final sweep: what slipped out (own session, reparented) or started after the last scan.
    late = [p for p in scan() if p.pid not in alive and tracker.alive(p)]
    swept = _signal_all(late, signal.SIGKILL)
    _add(signalled, swept)
    _add(alive, swept)
    if cgroup is not None and cgroups.members(cgroup):
        # Whatever forked since the sweep; cgroup.kill takes them all at once where it exists.
        left = [p for p in _cgroup_members(cgroup) if p.pid not in alive and tracker.alive(p)]
        if not cgroups.kill(cgroup):
            left = _signal_all(left, signal.SIGKILL)
        swept += left
        _add(signalled, left)
        _add(alive, left)
    survivors = tracker.wait(alive.values(), graces[-1]) if alive else []
    if cgroup is not None:
        cgroups.remove(cgroup, timeout=graces[-1])
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
    tracking: Tracking | None = None,
) -> Escalation:
    """Stop every process of the job by escalation (module doc); returns what it took.

    Pass the job's ``Popen`` when you hold it: the root is then reaped through it, so its
    ``returncode`` stays right. Without it the root is never reaped here (``os.waitpid``
    behind a ``Popen``'s back would make ``Popen.poll()`` report 0 for a killed job); a
    zombie counts as gone either way. ``tracking`` names the run's cgroup and ledger; the
    cgroup is removed once empty.
    """
    if popen is not None and popen.pid != rec.pid:
        raise ValueError(f"popen is PID {popen.pid}, record is PID {rec.pid}")
    tracking = tracking or Tracking()
    scan = _scanner([rec], rec.run_id, tracking)
    graces = (int_grace, term_grace, kill_grace)
    escalation, _ = _escalate((), graces, popen, scan, tracking.cgroup)
    return escalation


def _scanner(
    recs: Sequence[ProcRecord], run_id: str, tracking: Tracking
) -> Callable[..., list[psutil.Process]]:
    """A scan of the run's proven processes: tracked from every root, plus the marked."""
    ledger = Ledger(tracking.ledger)

    def scan(*, marked: bool = True) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for rec in recs:
            _add(found, tracked(rec, tracking, ledger=ledger))
        if marked:
            _add(found, marked_processes(run_id))
        return list(found.values())

    return scan


def _cmdline(proc: psutil.Process) -> tuple[str, ...]:
    try:
        return tuple(proc.cmdline())
    except psutil.Error:
        return ()


def sweep_stale(
    records: Iterable[ProcRecord],
    *,
    active_run_ids: Collection[str],
    runs_dir: Path | None = None,
    int_grace: float = 2.0,
    term_grace: float = 2.0,
    kill_grace: float = 2.0,
) -> list[StaleKill]:
    """Stop every process the harness started for a run that is over; return what was stopped.

    A run is over when its id is not in ``active_run_ids``. Its processes are those proven
    its own (module doc): the recorded roots that are still ours and their descendants,
    every process carrying its marker, and, from its run dir ``runs_dir/<run id>``, the
    members of its cgroup and the recorded descendants still alive (the cgroup is also found
    by its name without ``runs_dir``). A process proven none of these is never touched,
    whatever its command line. The cgroups of these runs are removed once empty.
    """
    stale: dict[str, list[ProcRecord]] = {}
    for rec in records:
        if rec.run_id and rec.run_id not in active_run_ids:
            stale.setdefault(rec.run_id, []).append(rec)
    kills: list[StaleKill] = []
    # One scan of every process's environment, however many finished runs there are.
    marked = _marked_by_run(set(stale)) if stale else {}
    for run_id, recs in stale.items():
        tracking = _tracking_of(run_id, runs_dir)
        scan = _scanner(recs, run_id, tracking)
        tree: dict[int, psutil.Process] = {}
        for rec in recs:
            _add(tree, job_tree(rec, marked=marked.get(run_id, [])))
        _add(tree, scan(marked=False))
        if not tree:
            if tracking.cgroup is not None:
                cgroups.remove(tracking.cgroup)
            continue
        cmdlines = {pid: _cmdline(proc) for pid, proc in tree.items()}
        escalation, signalled = _escalate(
            tree.values(), (int_grace, term_grace, kill_grace), None, scan, tracking.cgroup
        )
        survivors = set(escalation.survivors)
        for pid, proc in sorted(signalled.items()):
            cmdline = cmdlines.get(pid) or _cmdline(proc)
            kills.append(StaleKill(pid, run_id, cmdline, survived=pid in survivors))
    return kills


def _tracking_of(run_id: str, runs_dir: Path | None) -> Tracking:
    """A finished run's tracking: from its run dir when known, else its cgroup by name."""
    if runs_dir is not None and cgroups.name_for(run_id) is not None:
        return Tracking.of_run(runs_dir / run_id, run_id)
    return Tracking(cgroup=cgroups.find(run_id))
