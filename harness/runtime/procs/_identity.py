"""Recognising the run's processes: the record, the marker, the live tree (package doc)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import psutil

from harness.job.protocol import ENV_RUN_ID

MARKER_ENV = ENV_RUN_ID
CREATE_TIME_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class ProcRecord:
    """What the supervisor stores for every process it starts."""

    pid: int
    create_time: float
    run_id: str


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
    return proc if is_live(proc) else None


def _marker(proc: psutil.Process) -> str | None:
    try:
        value = proc.environ().get(MARKER_ENV)
    except psutil.Error:  # gone, zombie, or another user's process
        return None
    return value if isinstance(value, str) else None


def is_live(proc: psutil.Process) -> bool:
    """Running and not a zombie; ``is_running`` also rules out a reused PID."""
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def root_of(rec: ProcRecord) -> psutil.Process | None:
    """The recorded process when it is still ours (create time and marker match), else None."""
    proc = same_process(rec.pid, rec.create_time)
    if proc is None or _marker(proc) != rec.run_id:
        return None
    return proc


def is_ours(rec: ProcRecord) -> bool:
    """The recorded process is alive (not a zombie), same create time, and carries the marker."""
    return root_of(rec) is not None


def marked_processes(run_id: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``MARKER_ENV == run_id`` (ours excluded)."""
    if not run_id:
        return []
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid != me and _marker(proc) == run_id and is_live(proc):
            found.append(proc)
    return found


def marked_by_run(run_ids: Collection[str]) -> dict[str, list[psutil.Process]]:
    """One scan of all processes: the live ones carrying any of ``run_ids`` as marker."""
    me = os.getpid()
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        marker = _marker(proc)
        if marker is not None and marker in run_ids and is_live(proc):
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
    add_new(tree, descendants(root_of(rec)))
    add_new(tree, marked_processes(rec.run_id) if marked is None else marked)
    return list(tree.values())


def descendants(root: psutil.Process | None) -> list[psutil.Process]:
    """``root`` and its live descendants; [] for no root."""
    if root is None:
        return []
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    return [root, *(c for c in children if is_live(c))]


def add_new(into: dict[int, psutil.Process], procs: Iterable[psutil.Process]) -> None:
    """Add ``procs`` to ``into`` by PID, keeping the object already there."""
    for proc in procs:
        into.setdefault(proc.pid, proc)
