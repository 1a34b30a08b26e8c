"""Runs without a living supervisor: re-adoption, lost runs, and aborting them directly.

A supervisor records itself (PID and create time) on every run it watches. When it
dies, the next supervisor to start claims its runs: those whose root process still
matches (PID, create time, marker) are re-adopted; the others are marked ``lost`` with an
incident, with the exit status the job's wrapper left in ``exit.json`` when there is one.
Aborting a run nobody watches goes through its launcher's re-adopted handle, so it stops
everything the launcher tracks (the run's cgroup, its recorded descendants), not only
what still carries the run marker.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlmodel import col, select

import mistakes as ml
from harness.core.spec import RunSpec
from harness.runtime import cgroups, procs
from harness.runtime.launchers import launcher_of
from harness.runtime.wrap import read_exit
from memory import ACTIVE, TERMINAL, Run, Store

__all__ = ["abort_unsupervised", "claim_orphans", "supervisor_alive"]


def supervisor_alive(pid: int | None, create_time: float | None) -> bool:
    """Whether the supervisor that recorded itself on a run is still that process."""
    return procs.same_process(pid, create_time) is not None


def claim_orphans(store: Store, me: tuple[int, float]) -> list[tuple[Run, bool]]:
    """Take over runs whose supervisor died: (row, alive). Dead jobs are marked lost."""
    out = []
    pid, ctime = me
    with store.write() as s:
        rows = s.exec(select(Run).where(col(Run.status).in_(ACTIVE))).all()
        for row in rows:
            if supervisor_alive(row.supervisor_pid, row.supervisor_create_time):
                continue
            rec = None
            if row.pid is not None and row.create_time is not None:
                rec = procs.ProcRecord(row.pid, row.create_time, row.id)
            alive = rec is not None and _job_alive(row, rec)
            if alive:
                row.supervisor_pid, row.supervisor_create_time = pid, ctime
            else:
                _release_cgroup(Path(row.run_dir), row.id)
                code = read_exit(Path(row.run_dir))
                was = row.status
                row.status, row.ended_at, row.exit_code = "lost", time.time(), code
                if row.pid is None:  # died in queued/preflight/starting: never launched
                    row.summary = f"lost: the supervisor died during {was}"
                else:
                    row.summary = "lost: the job ended while no supervisor watched it" + (
                        f" (exit code {code})" if code is not None else ""
                    )
                ml.record_incident(
                    session=s,
                    rule="lost",
                    summary=row.summary,
                    run_id=row.id,
                    severity="error",
                    evidence={"pid": row.pid, "exit_code": code},
                    action="marked lost",
                )
            s.add(row)
            out.append((row, alive))
    return out


def _job_alive(row: Run, rec: procs.ProcRecord) -> bool:
    """Whether the run's job is still there, asked of its launcher (Slurm: the queue)."""
    try:
        spec = RunSpec.model_validate(row.spec)
    except ValueError:  # a spec this version cannot read: a local job, by its process
        return procs.is_ours(rec)
    launcher = launcher_of(spec)
    return launcher.alive(rec, Path(row.run_dir))


def _release_cgroup(run_dir: Path, run_id: str) -> None:
    """A dead job's cgroup goes if empty; what it left behind keeps it for the stale sweep."""
    cgroup = cgroups.read_record(run_dir, run_id)
    if cgroup is not None and not cgroups.members(cgroup):
        cgroups.remove(cgroup)


def abort_unsupervised(store: Store, run_id: str, reason: str) -> Run | None:
    """Abort a run nobody watches (its supervisor died): signal the tree, mark aborted."""
    with store.read() as s:
        row = s.get(Run, run_id)
    if row is None or row.status in TERMINAL:
        return row
    if supervisor_alive(row.supervisor_pid, row.supervisor_create_time):
        return None
    if row.pid is not None and row.create_time is not None:
        spec = RunSpec.model_validate(row.spec)
        rec = procs.ProcRecord(row.pid, row.create_time, row.id)
        launcher = launcher_of(spec)
        handle = launcher.adopt(rec, Path(row.run_dir))
        handle.terminate(int_grace=spec.watch.int_grace_s, term_grace=spec.watch.term_grace_s)
    with store.write() as s:
        row = s.get(Run, run_id)
        assert row is not None
        row.status, row.ended_at = "aborted", time.time()
        row.summary = f"aborted: {reason} (no supervisor was watching)"
        ml.record_incident(
            session=s,
            rule="user_abort",
            summary=row.summary,
            run_id=run_id,
            severity="info",
            action="aborted the run",
        )
        s.add(row)
        return row
