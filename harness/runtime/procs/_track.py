"""What left the tree: the run's cgroup, the job's session, the descendants ledger."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness._atomic import write_text_atomic
from harness.runtime import cgroups
from harness.runtime.procs._identity import (
    CREATE_TIME_TOLERANCE_S,
    ProcRecord,
    add_new,
    descendants,
    is_live,
    root_of,
    same_process,
)

LEDGER_FILE = "descendants.jsonl"  # in the run dir: one {"pid", "create_time"} per line
_LEDGER_MAX_BYTES = 1 << 20  # what is read back of a ledger (it is the job's dir)
_LEDGER_COMPACT_AT = 512  # entries; past this, dead ones are dropped from the file


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

    def living(self, known: Mapping[int, psutil.Process] | None = None) -> list[psutil.Process]:
        """The recorded processes still alive with their recorded create time.

        Those already in ``known`` (by PID and create time) are not looked up again.
        """
        known = known or {}
        keys = [k for k in self._seen if k[0] not in known or _key(known[k[0]]) != k]
        return _living(keys)

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


def cgroup_members(cgroup: Path) -> list[psutil.Process]:
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
    return [p for pid, p in found.items() if pid in still and is_live(p)]


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
        if is_live(proc):
            found.append(proc)
    return found


def _in_session(proc: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(proc.pid) == sid and is_live(proc)
    except OSError:
        return False


def tracked(
    rec: ProcRecord, tracking: Tracking, *, ledger: Ledger | None = None
) -> list[psutil.Process]:
    """Every live process of the run found without scanning environments (package doc).

    The root and its descendants, the members of the run's cgroup, the job's session while
    the root or another process proven ours is still in it, and the recorded descendants still
    alive. ``ledger`` is the handle's own (kept in memory); by default the file is read.
    """
    found: dict[int, psutil.Process] = {}
    root = root_of(rec)
    add_new(found, descendants(root))
    if tracking.cgroup is not None:
        add_new(found, cgroup_members(tracking.cgroup))
    recorded = (ledger or Ledger(tracking.ledger)).living(found)
    # Any process proven ours that is in the session proves the session is still ours.
    anchors = [root] if root is not None else [*found.values(), *recorded]
    if any(_in_session(p, rec.pid) for p in anchors):
        add_new(found, _session_members(rec.pid, rec.create_time))
    add_new(found, recorded)
    found.pop(os.getpid(), None)
    return list(found.values())
