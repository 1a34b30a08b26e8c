"""Runs and the processes started for them.

A :class:`Run` row is the durable truth about a run: its spec, status, the root process
(PID and create time, so a restarted supervisor can re-adopt it), which supervisor
process is watching it, the last progress snapshot, and an abort request. Requests from
other processes (``harness abort``, the HTTP API, Discord) are written here and picked up
by the supervisor watching the run; no other channel is needed.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column, func
from sqlmodel import Field, Session, SQLModel, col, select

from ._text import clean_text

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Run",
    "RunNotFoundError",
    "RunProcess",
    "active_runs",
    "find_run",
    "list_runs",
    "pending_abort",
    "processes_of_finished_runs",
    "register_process",
    "request_abort",
]

TERMINAL = ("succeeded", "failed", "aborted", "lost")
ACTIVE = ("queued", "preflight", "starting", "running", "aborting")


class RunNotFoundError(LookupError):
    """No run matches; the message says which id was asked for."""


class Run(SQLModel, table=True):
    id: str = Field(primary_key=True)
    name: str = Field(index=True)
    source: str = ""  # "preset echo" or the spec file
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="queued", index=True)
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    run_dir: str = ""
    pid: int | None = None
    create_time: float | None = None
    exit_code: int | None = None
    summary: str = ""
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    progress_at: float | None = None
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    abort_requested: str | None = None  # the reason, once requested
    abort_by: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class RunProcess(SQLModel, table=True):
    """Every process the harness started (jobs, preflight commands), for the stale sweep."""

    __tablename__ = "run_process"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    pid: int
    create_time: float
    role: str = "job"


def register_process(
    *, session: Session, run_id: str, pid: int, create_time: float, role: str = "job"
) -> None:
    session.add(RunProcess(run_id=run_id, pid=pid, create_time=create_time, role=role))


def find_run(*, session: Session, ref: str) -> Run:
    """A run by its id or a unique prefix of it, or ``last`` for the newest run."""
    ref = ref.strip()
    if not ref:
        raise RunNotFoundError("no run id given (see `harness runs`)")
    if ref == "last":
        row = session.exec(select(Run).order_by(col(Run.created_at).desc())).first()
        if row is None:
            raise RunNotFoundError("no runs yet")
        return row
    exact = session.get(Run, ref)
    if exact is not None:
        return exact
    # a prefix compared as it is (LIKE would ignore case: "L" would find "live-1")
    prefix = func.substr(col(Run.id), 1, len(ref))
    matches = session.exec(select(Run).where(prefix == ref).limit(3)).all()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFoundError(f"no run {ref!r} (see `harness runs`)")
    raise RunNotFoundError(f"{ref!r} matches several runs: {', '.join(m.id for m in matches)}, …")


def request_abort(*, session: Session, run_id: str, reason: str, by: str) -> Run:
    """Ask the supervisor watching ``run_id`` to abort it (it polls for this row's request).

    Any process may call this: the terminal, the HTTP API, Discord, another supervisor.
    The first request wins; a later one does not overwrite its reason.
    """
    row = session.get(Run, run_id)
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r} (see `harness runs`)")
    if row.abort_requested is None:  # a bad character in a reason never blocks an abort
        row.abort_requested, row.abort_by = clean_text(reason), clean_text(by)
        session.add(row)
    return row


def pending_abort(*, session: Session, run_id: str) -> tuple[str, str] | None:
    """(reason, by) when an abort of ``run_id`` was requested, else None."""
    row = session.get(Run, run_id)
    if row is None or row.abort_requested is None:
        return None
    return row.abort_requested, row.abort_by or "user"


def list_runs(*, session: Session, limit: int = 50, active_only: bool = False) -> list[Run]:
    q = select(Run)
    if active_only:
        q = q.where(col(Run.status).in_(ACTIVE))
    return list(session.exec(q.order_by(col(Run.created_at).desc()).limit(limit)).all())


def active_runs(*, session: Session) -> list[Run]:
    return list_runs(session=session, limit=1000, active_only=True)


def processes_of_finished_runs(*, session: Session) -> list[RunProcess]:
    q = select(RunProcess).join(Run).where(col(Run.status).in_(TERMINAL))
    return list(session.exec(q).all())
