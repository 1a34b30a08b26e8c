"""What the supervision path writes to the store, as plain functions of the store.

Each runs in a worker thread through the run's :class:`~harness.runtime.guard.RunWriter`,
so a test can drive them directly with whatever a job may report. Each makes its values
strict JSON first (:func:`stored`: non-finite numbers as ``"nan"``/``"inf"``, text cleaned
of lone surrogates), so a metric of ``1e999`` or a ``"\\ud800"`` in a metrics line never
reaches SQLite, which would refuse the whole write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import mistakes as ml
from harness.core.machine import RunMachine
from harness.core.rules import Finding
from harness.job.protocol import METRICS_FILE
from harness.runtime.guard import Outcome, RunWriter
from harness.runtime.procs import ProcRecord
from harness.runtime.tail import rank_rates
from memory import Run, Store, clean_text, json_safe, pending_abort, register_process

__all__ = [
    "final_row",
    "finish_run",
    "incident_record",
    "insert_run",
    "mark_started",
    "progress_fields",
    "read_abort",
    "record_finding",
    "save_progress",
    "set_fields",
    "stored",
    "submit_finish",
    "submit_incident",
]


def stored(value: Any) -> Any:
    """``value`` as the store keeps it: strict JSON, non-finite numbers as ``"nan"``/``"inf"``."""
    return json_safe(value, nonfinite="text")


def insert_run(store: Store, row: Run) -> None:
    with store.write() as s:
        s.add(row)


def set_fields(store: Store, run_id: str, fields: Mapping[str, Any]) -> None:
    """Set columns of the run's row (values made storable); nothing for an unknown run."""
    with store.write() as s:
        row = s.get(Run, run_id)
        if row is None:
            return
        for key, value in fields.items():
            setattr(row, key, stored(value))
        s.add(row)


def mark_started(
    store: Store,
    run_id: str,
    rec: ProcRecord,
    started: float,
    *,
    status: str = "running",
    local: bool = True,
) -> None:
    """The job started: its record on the row; a ``local`` root is also a run process (the
    stale sweep's). A Slurm job's record is its job id and it starts ``queued``."""
    with store.write() as s:
        row = s.get(Run, run_id)
        if row is None:
            return
        row.status, row.started_at = status, started
        row.pid, row.create_time = rec.pid, rec.create_time
        if local:
            register_process(session=s, run_id=run_id, pid=rec.pid, create_time=rec.create_time)
        s.add(row)


def finish_run(
    store: Store,
    run_id: str,
    status: str,
    summary: str,
    result: Mapping[str, Any],
    code: int | None,
    ended: float,
) -> Run | None:
    """Write how the run ended; the row as stored, or None for an unknown run."""
    with store.write() as s:
        row = s.get(Run, run_id)
        if row is None:
            return None
        row.status, row.summary, row.ended_at = status, clean_text(summary), ended
        row.result, row.exit_code = stored({**(row.result or {}), **result}), code
        if isinstance(result.get("progress"), Mapping):  # the last word on progress
            row.progress, row.progress_at = stored(result["progress"]), ended
        s.add(row)
        return row


def record_finding(
    store: Store,
    run_id: str | None,
    finding: Finding,
    severity: str,
    action: str,
    *,
    ts: float | None = None,
) -> int:
    """Store ``finding`` as an incident of the run (evidence made storable); its id."""
    ids = finding.mistake_ids
    with store.write() as s:
        row = ml.record_incident(
            session=s,
            rule=finding.rule,
            summary=clean_text(finding.summary) or finding.rule,
            run_id=run_id,
            mistake_id=ids[0] if ids else None,
            severity=severity,
            evidence=stored({**finding.evidence, "mistake_ids": list(ids)}),
            action=clean_text(action),
            ts=ts,
        )
        return row.id or 0


def read_abort(store: Store, run_id: str) -> tuple[str, str] | None:
    with store.read() as s:
        return pending_abort(session=s, run_id=run_id)


def progress_fields(machine: RunMachine, *, at: float) -> dict[str, Any]:
    """What a progress write puts on the row; taken on the loop (the machine moves on)."""
    return {
        "progress": machine.progress.snapshot(),
        "progress_at": at,
        "status": {"aborting": "aborting", "restarting": "starting"}.get(
            machine.status, "queued" if machine.waiting else "running"
        ),
    }


def save_progress(store: Store, run_id: str, fields: Mapping[str, Any], run_dir: Path) -> None:
    """A progress write; a job of several ranks (torchrun) also gets each rank's step rate
    (``progress.ranks``, read here in the writer's thread), so heartbeats show a straggler."""
    ranks = rank_rates(run_dir, run_dir / METRICS_FILE)
    if len(ranks) > 1:
        progress = dict(fields.get("progress") or {})
        progress["ranks"] = [{"rank": r.rank, "step": r.step, "rate": r.steps_per_s} for r in ranks]
        fields = {**fields, "progress": progress}
    set_fields(store, run_id, fields)


def incident_record(finding: Finding, severity: str, action: str, ts: float) -> dict[str, Any]:
    """The incident as the fallback file keeps it when the store refuses it."""
    return {
        "ts": ts,
        "rule": finding.rule,
        "summary": finding.summary,
        "severity": severity,
        "action": action,
        "evidence": finding.evidence,
    }


def final_row(
    known: Run, status: str, summary: str, result: Mapping[str, Any], code: int | None
) -> Run:
    """The final row as it would have been stored, built from what this process knows."""
    data = known.model_dump()
    data.update(
        status=status,
        summary=clean_text(summary),
        ended_at=time.time(),
        exit_code=code,
        result=stored({**(known.result or {}), **result}),
    )
    if isinstance(result.get("progress"), Mapping):
        data.update(progress=stored(result["progress"]), progress_at=data["ended_at"])
    return Run(**data)


def submit_incident(
    writer: RunWriter, store: Store, run_id: str, finding: Finding, severity: str, action: str
) -> asyncio.Future[Outcome]:
    """Queue the incident on the run's writer, stamped now (the time of the decision)."""
    ts = time.time()
    return writer.submit(
        "record an incident",
        partial(record_finding, store, run_id, finding, severity, action, ts=ts),
        incident_record(finding, severity, action, ts),
    )


def submit_finish(
    writer: RunWriter,
    store: Store,
    run_id: str,
    status: str,
    summary: str,
    result: Mapping[str, Any],
    code: int | None,
) -> asyncio.Future[Outcome]:
    """Queue the final row; retried in the background if the store refuses it for now."""
    ended = time.time()
    record = {"status": status, "summary": summary, "result": result, "exit_code": code}
    fn = partial(finish_run, store, run_id, status, summary, result, code, ended)
    return writer.submit("record how the run ended", fn, record, persist=True)
