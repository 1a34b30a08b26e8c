"""Stopping a run: the escalation, and the sweep of runs that are over (package doc)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.runtime import cgroups
from harness.runtime.procs._identity import (
    ProcRecord,
    add_new,
    is_live,
    job_tree,
    marked_by_run,
    marked_processes,
)
from harness.runtime.procs._track import Ledger, Tracking, cgroup_members, tracked

_POLL_S = 0.05
#: chooses, among a job's live processes, those the graceful SIGINT goes to
IntTargets = Callable[[Sequence[psutil.Process]], Sequence[psutil.Process]]


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


class _Tracker:
    """Liveness for the processes of one escalation; reaps the root through its Popen."""

    def __init__(self, popen: subprocess.Popen[bytes] | None) -> None:
        self._popen = popen

    def alive(self, proc: psutil.Process) -> bool:
        if self._popen is not None and proc.pid == self._popen.pid:
            # poll() reaps our child and keeps its exit status for the caller.
            return self._popen.poll() is None and is_live(proc)
        return is_live(proc)

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
    int_to: IntTargets | None = None,
) -> tuple[Escalation, dict[int, psutil.Process]]:
    """SIGINT, SIGTERM, SIGKILL in turn to what is left, a final sweep, then the cgroup.

    ``scan`` lists the run's processes now (only proven ones); it runs before each step
    and once more at the end. ``cgroup`` is emptied with ``cgroup.kill`` and removed.
    ``int_to`` picks, among the live processes, those SIGINT is sent to (a launcher that
    forwards it to its workers); the step still waits for all of them.
    """
    start = time.monotonic()
    tracker = _Tracker(popen)
    signalled: dict[int, psutil.Process] = {}
    steps: list[tuple[str, int]] = []
    alive: dict[int, psutil.Process] = {p.pid: p for p in collect}
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), graces, strict=True):
        # Rescan each step: the job may have started processes while shutting down.
        add_new(alive, scan())
        targets = [p for p in alive.values() if tracker.alive(p)]
        if not targets:
            alive = {}
            break
        chosen = int_to(targets) if int_to is not None and sig == signal.SIGINT else targets
        sent = _signal_all(chosen, sig)
        add_new(signalled, sent)
        if sent:
            steps.append((sig.name, len(sent)))
        alive = {p.pid: p for p in tracker.wait(targets, grace)}
    # Final sweep: what slipped out (own session, reparented) or started after the last scan.
    late = [p for p in scan() if p.pid not in alive and tracker.alive(p)]
    swept = _signal_all(late, signal.SIGKILL)
    add_new(signalled, swept)
    add_new(alive, swept)
    if cgroup is not None and cgroups.members(cgroup):
        # Whatever forked since the sweep; cgroup.kill takes them all at once where it exists.
        left = [p for p in cgroup_members(cgroup) if p.pid not in alive and tracker.alive(p)]
        if not cgroups.kill(cgroup):
            left = _signal_all(left, signal.SIGKILL)
        swept += left
        add_new(signalled, left)
        add_new(alive, left)
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
    int_to: IntTargets | None = None,
) -> Escalation:
    """Stop every process of the job by escalation (module doc); returns what it took.

    Pass the job's ``Popen`` when you hold it: the root is then reaped through it, so its
    ``returncode`` stays right. Without it the root is never reaped here (``os.waitpid``
    behind a ``Popen``'s back would make ``Popen.poll()`` report 0 for a killed job); a
    zombie counts as gone either way. ``tracking`` names the run's cgroup and ledger; the
    cgroup is removed once empty. ``int_to`` chooses which of the job's live processes get
    the SIGINT (by default all); SIGTERM and SIGKILL always go to every one.
    """
    if popen is not None and popen.pid != rec.pid:
        raise ValueError(f"popen is PID {popen.pid}, record is PID {rec.pid}")
    tracking = tracking or Tracking()
    scan = _scanner([rec], rec.run_id, tracking)
    graces = (int_grace, term_grace, kill_grace)
    escalation, _ = _escalate((), graces, popen, scan, tracking.cgroup, int_to)
    return escalation


def _scanner(
    recs: Sequence[ProcRecord], run_id: str, tracking: Tracking
) -> Callable[..., list[psutil.Process]]:
    """A scan of the run's proven processes: tracked from every root, plus the marked."""
    ledger = Ledger(tracking.ledger)

    def scan(*, marked: bool = True) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for rec in recs:
            add_new(found, tracked(rec, tracking, ledger=ledger))
        if marked:
            add_new(found, marked_processes(run_id))
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
    marked = marked_by_run(set(stale)) if stale else {}
    for run_id, recs in stale.items():
        tracking = _tracking_of(run_id, runs_dir)
        scan = _scanner(recs, run_id, tracking)
        tree: dict[int, psutil.Process] = {}
        for rec in recs:
            add_new(tree, job_tree(rec, marked=marked.get(run_id, [])))
        add_new(tree, scan(marked=False))
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
