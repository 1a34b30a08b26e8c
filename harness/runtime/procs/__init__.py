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
  root's PID) while the root or another process proven ours is still in that session:
  the kernel never reuses a session id that a live process still has, so it is still ours;
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

Everything here is blocking; the supervisor runs it in a worker thread. Inside:
``_spawn`` starts a job, ``_identity`` recognises its processes (record, marker, tree),
``_track`` follows what left the tree (cgroup, session, ledger), ``_stop`` stops them.

A job that cannot be started raises ``harness.errors.SpawnError`` with one line naming
the cause.
"""

from harness.runtime.procs._identity import (
    CREATE_TIME_TOLERANCE_S,
    MARKER_ENV,
    ProcRecord,
    is_ours,
    job_tree,
    marked_processes,
    same_process,
)
from harness.runtime.procs._spawn import spawn
from harness.runtime.procs._stop import Escalation, StaleKill, sweep_stale, terminate_tree
from harness.runtime.procs._track import LEDGER_FILE, Ledger, Tracking, read_ledger, tracked

__all__ = [
    "CREATE_TIME_TOLERANCE_S",
    "LEDGER_FILE",
    "MARKER_ENV",
    "Escalation",
    "Ledger",
    "ProcRecord",
    "StaleKill",
    "Tracking",
    "is_ours",
    "job_tree",
    "marked_processes",
    "read_ledger",
    "same_process",
    "spawn",
    "sweep_stale",
    "terminate_tree",
    "tracked",
]
