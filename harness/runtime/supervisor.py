"""The supervisor shell: launches jobs, feeds the state machine, carries out its actions.

Everything blocking (SQLite, psutil, NVML, signalling, waiting for a process) runs in a
worker thread through ``asyncio.to_thread``, so one event loop can watch several runs
and, in ``harness serve``, host the HTTP API and the scheduler as well.

Before launch: stale processes of finished runs are terminated (M-025), free RAM is
checked (M-030), the spec's preflight commands run; a failure refuses the launch with an
incident. While running: metric lines are tailed every ``TAIL_EVERY_S``, probes sampled
every ``watch.sample_every_s``, abort requests read from the database, progress written
back. A supervisor that starts finds runs whose supervisor died and re-adopts those whose
root process still matches (PID, create time, marker), marking the others lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

import mistakes as ml
from harness._atomic import write_json_atomic
from harness.core.machine import (
    AbortRequested,
    Action,
    Exited,
    Finish,
    MetricLines,
    Notify,
    ProbeSample,
    RecordIncident,
    RunMachine,
    Terminate,
    Tick,
)
from harness.core.rules import Finding
from harness.core.spec import RunSpec
from harness.errors import LaunchRefused, SpawnError, SpecError
from harness.job.protocol import CONTROLS_FILE, METRICS_FILE, STDERR_FILE
from harness.runtime import procs
from harness.runtime.launchers import JobHandle, launcher_for
from harness.runtime.orphans import claim_orphans
from harness.runtime.preflight import preflight_checks, run_env
from harness.runtime.probes import CpuProbe, GpuProbe, read_ram
from harness.runtime.specs import resolve_command
from harness.runtime.tail import MetricsTail
from memory import TERMINAL, Run, Store, pending_abort, register_process, request_abort

__all__ = ["CONTROL_EVERY_S", "PROGRESS_EVERY_S", "TAIL_EVERY_S", "Supervisor", "new_run_id"]

log = logging.getLogger("harness.supervisor")

TAIL_EVERY_S = 0.2
CONTROL_EVERY_S = 0.5
PROGRESS_EVERY_S = 2.0
STDERR_TAIL_BYTES = 4096
NotifyFn = Callable[[str, bool], None]


def new_run_id(name: str, *, now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def _self_identity() -> tuple[int, float]:
    me = psutil.Process()
    return me.pid, me.create_time()


def _tail_text(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - limit, 0))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class _Job:
    run_id: str
    spec: RunSpec
    run_dir: Path
    handle: JobHandle
    started_wall: float
    task: asyncio.Task[Run] | None = None
    terminating: asyncio.Task[procs.Escalation] | None = None


class Supervisor:
    """Launches and watches runs on the current event loop."""

    def __init__(
        self,
        store: Store,
        runs_dir: Path,
        *,
        notify: NotifyFn | None = None,
        gpu: GpuProbe | None = None,
    ) -> None:
        self.store = store
        self.runs_dir = Path(runs_dir)
        self.notify: NotifyFn = notify or (lambda text, alert: None)
        self._gpu = gpu
        self._gpu_owned = gpu is None
        self._jobs: dict[str, _Job] = {}
        self.machines: dict[str, RunMachine] = {}
        self._me = _self_identity()

    # -- lifecycle ----------------------------------------------------------------------

    async def _gpu_probe(self) -> GpuProbe:
        if self._gpu is None:
            self._gpu = await asyncio.to_thread(GpuProbe)
        return self._gpu

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job.task
        if self._gpu is not None and self._gpu_owned:
            await asyncio.to_thread(self._gpu.close)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    def _record(self, run_id: str | None, finding: Finding, severity: str, action: str) -> int:
        ids = finding.mistake_ids
        with self.store.write() as s:
            row = ml.record_incident(
                session=s,
                rule=finding.rule,
                summary=finding.summary,
                run_id=run_id,
                mistake_id=ids[0] if ids else None,
                severity=severity,
                evidence={**finding.evidence, "mistake_ids": list(ids)},
                action=action,
            )
            return row.id or 0

    # -- launching ----------------------------------------------------------------------

    async def launch(self, spec: RunSpec, *, source: str = "") -> str:
        """Create the run, run the pre-launch checklist, start the job; returns the run id.

        Raises ``LaunchRefused`` (after recording the run as failed, with incidents)
        when a check fails or the job cannot be started, and ``SpecError`` for a program
        that does not exist or a launcher this version does not have.
        """
        launcher = launcher_for(spec.launcher)
        run_id = new_run_id(spec.name)
        runs_dir = self.runs_dir.resolve()
        run_dir = (runs_dir / run_id).resolve()
        if run_dir.parent != runs_dir:  # the name is validated; this is the belt and braces
            raise SpecError(f"run directory {run_dir} would leave {runs_dir}")
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        write_json_atomic(run_dir / CONTROLS_FILE, spec.controls)
        (run_dir / METRICS_FILE).touch()
        pid, ctime = self._me
        row = Run(
            id=run_id,
            name=spec.name,
            source=source,
            spec=spec.model_dump(mode="json"),
            status="preflight",
            run_dir=str(run_dir),
            supervisor_pid=pid,
            supervisor_create_time=ctime,
        )
        await self._db(self._insert, row)
        items = await asyncio.to_thread(
            preflight_checks, spec, run_dir=run_dir, run_id=run_id, store=self.store, clean=True
        )
        stale = next(i for i in items if i.name == "stale processes")
        if stale.evidence != "none found":
            finding = Finding("stale_processes", "warn", stale.evidence, {"detail": stale.evidence})
            await self._db(self._record, run_id, finding, "warn", "terminated before launch")
        failed = [i for i in items if not i.passed]
        checks = [{"name": i.name, "passed": i.passed, "evidence": i.evidence} for i in items]
        if failed:
            summary = "refused: " + "; ".join(f"{i.name}: {i.evidence}" for i in failed)
            for item in failed:
                finding = Finding(
                    item.rule or "preflight",
                    "abort",
                    f"{item.name}: {item.evidence}",
                    {"check": item.name, "evidence": item.evidence},
                )
                await self._db(self._record, run_id, finding, "abort", "refused launch")
            await self._db(self._finish, run_id, "failed", summary, {"checks": checks}, None)
            self.notify(f"{spec.name} ({run_id}): launch {summary}", True)
            raise LaunchRefused(summary)
        await self._db(self._set, run_id, status="starting", result={"checks": checks})
        argv = resolve_command(spec.command, run_dir=run_dir, args=spec.args)
        cwd = Path(spec.cwd) if spec.cwd else Path.cwd()
        try:
            handle = await asyncio.to_thread(
                launcher.start,
                argv,
                run_id=run_id,
                run_dir=run_dir,
                cwd=cwd,
                env=run_env(run_dir, run_id, spec.env),
            )
        except SpawnError as exc:
            await self._db(self._finish, run_id, "failed", f"failed: {exc}", {}, None)
            raise LaunchRefused(str(exc)) from None
        started = time.time()
        await self._db(self._started, run_id, handle.record, started)
        job = _Job(run_id, spec, run_dir, handle, started)
        self._start_watch(job)
        return run_id

    def _insert(self, row: Run) -> None:
        with self.store.write() as s:
            s.add(row)

    def _set(self, run_id: str, **fields: Any) -> None:
        with self.store.write() as s:
            row = s.get(Run, run_id)
            if row is None:
                return
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)

    def _started(self, run_id: str, rec: procs.ProcRecord, started: float) -> None:
        with self.store.write() as s:
            row = s.get(Run, run_id)
            assert row is not None
            row.status, row.started_at = "running", started
            row.pid, row.create_time = rec.pid, rec.create_time
            register_process(session=s, run_id=run_id, pid=rec.pid, create_time=rec.create_time)
            s.add(row)

    def _finish(
        self, run_id: str, status: str, summary: str, result: dict[str, Any], code: int | None
    ) -> Run:
        with self.store.write() as s:
            row = s.get(Run, run_id)
            assert row is not None
            row.status, row.summary, row.ended_at = status, summary, time.time()
            row.result, row.exit_code = {**(row.result or {}), **result}, code
            s.add(row)
            return row

    # -- watching -----------------------------------------------------------------------

    def _start_watch(self, job: _Job) -> None:
        self._jobs[job.run_id] = job
        job.task = asyncio.get_running_loop().create_task(
            self._watch(job), name=f"watch {job.run_id}"
        )

    async def wait(self, run_id: str) -> Run:
        """The run once it has ended; KeyError for a run not watched here and not over.

        A run that ended before the call (its job is no longer tracked) is read back from
        the database, which holds its final row by then.
        """
        job = self._jobs.get(run_id)
        if job is None or job.task is None:
            row = await self._db(self._get, run_id)
            if row is not None and row.status in TERMINAL:
                return row
            raise KeyError(run_id)
        return await asyncio.shield(job.task)

    def _get(self, run_id: str) -> Run | None:
        with self.store.read() as s:
            return s.get(Run, run_id)

    def running(self) -> list[str]:
        return [r for r, j in self._jobs.items() if j.task is not None and not j.task.done()]

    async def request_abort(self, run_id: str, reason: str, *, by: str = "user") -> None:
        """Ask for an abort through the database, as any other process would."""
        await self._db(self._request_abort, run_id, reason, by)

    def _request_abort(self, run_id: str, reason: str, by: str) -> None:
        with self.store.write() as s:
            request_abort(session=s, run_id=run_id, reason=reason, by=by)

    async def _watch(self, job: _Job) -> Run:
        spec, loop = job.spec, asyncio.get_running_loop()
        mono_start = loop.time() - max(time.time() - job.started_wall, 0.0)
        machine = RunMachine(spec, started_at=mono_start)
        self.machines[job.run_id] = machine
        tail = MetricsTail(job.run_dir / METRICS_FILE)
        cpu = CpuProbe(job.handle.processes)
        gpu = await self._gpu_probe()
        next_sample = next_control = next_progress = loop.time()
        final: Run | None = None
        try:
            while final is None:
                now = loop.time()
                batch = await asyncio.to_thread(tail.read_new)
                acts: list[Action] = []
                if batch.records or batch.garbage or batch.oversized:
                    acts += machine.handle(
                        MetricLines(
                            now, batch.records, batch.garbage, batch.oversized, batch.first_garbage
                        )
                    )
                exited, code = await asyncio.to_thread(job.handle.poll)
                if exited:
                    batch = await asyncio.to_thread(tail.read_new)  # the last lines
                    if batch.records or batch.garbage or batch.oversized:
                        acts += machine.handle(
                            MetricLines(
                                now,
                                batch.records,
                                batch.garbage,
                                batch.oversized,
                                batch.first_garbage,
                            )
                        )
                    stderr = await asyncio.to_thread(_tail_text, job.run_dir / STDERR_FILE)
                    acts += machine.handle(Exited(now, code, stderr))
                elif now >= next_sample:
                    next_sample = now + spec.watch.sample_every_s
                    acts += machine.handle(await self._sample(cpu, gpu, job, now))
                else:
                    acts += machine.handle(Tick(now))
                if not exited and now >= next_control:
                    next_control = now + CONTROL_EVERY_S
                    reason = await self._db(self._abort_request, job.run_id)
                    if reason is not None:
                        acts += machine.handle(AbortRequested(now, reason[0], reason[1]))
                for act in acts:
                    final = await self._execute(job, machine, act) or final
                if final is None and now >= next_progress:
                    next_progress = now + PROGRESS_EVERY_S
                    await self._db(self._save_progress, job.run_id, machine)
                if final is None:
                    await asyncio.sleep(TAIL_EVERY_S)
        finally:
            if job.terminating is not None and not job.terminating.done():
                with contextlib.suppress(Exception):
                    await job.terminating
        return final

    async def _sample(self, cpu: CpuProbe, gpu: GpuProbe, job: _Job, now: float) -> ProbeSample:
        def probe() -> ProbeSample:
            c = cpu.sample()
            ram = read_ram()
            busy = vram = vtotal = None
            if gpu.available:
                pids = [p.pid for p in job.handle.processes()]
                g = gpu.sample(pids)
                busy, vram, vtotal = g.busy, g.mem_used_bytes, g.mem_total_bytes
            return ProbeSample(
                now, c.util, ram.available_bytes, busy, vram, vtotal, c.available_util
            )

        return await asyncio.to_thread(probe)

    def _abort_request(self, run_id: str) -> tuple[str, str] | None:
        with self.store.read() as s:
            return pending_abort(session=s, run_id=run_id)

    def _save_progress(self, run_id: str, machine: RunMachine) -> None:
        self._set(
            run_id,
            progress=machine.progress.snapshot(),
            progress_at=time.time(),
            status="aborting" if machine.status == "aborting" else "running",
        )

    async def _execute(self, job: _Job, machine: RunMachine, act: Action) -> Run | None:
        if isinstance(act, RecordIncident):
            await self._db(self._record, job.run_id, act.finding, act.severity, act.action)
        elif isinstance(act, Notify):
            self.notify(f"{act.text} [{job.run_id}]", act.alert)
        elif isinstance(act, Terminate):
            await self._db(self._set, job.run_id, status="aborting")
            if job.terminating is None:
                w = job.spec.watch
                job.terminating = asyncio.get_running_loop().create_task(
                    asyncio.to_thread(
                        job.handle.terminate, int_grace=w.int_grace_s, term_grace=w.term_grace_s
                    )
                )
        elif isinstance(act, Finish):
            result = {**act.result, "progress": machine.progress.snapshot()}
            code = act.result.get("exit_code")
            row = await self._db(self._finish, job.run_id, act.status, act.summary, result, code)
            self._jobs.pop(job.run_id, None)
            return row
        return None

    # -- re-adoption --------------------------------------------------------------------

    def _claim(self) -> list[tuple[Run, bool]]:
        return claim_orphans(self.store, self._me)

    async def adopt_orphans(self) -> tuple[list[str], list[str]]:
        """Re-adopt runs whose supervisor died; mark lost those whose job is gone."""
        claimed = await self._db(self._claim)
        adopted, lost = [], []
        for row, alive in claimed:
            if alive:
                spec = RunSpec.model_validate(row.spec)
                rec = procs.ProcRecord(row.pid, row.create_time, row.id)
                run_dir = Path(row.run_dir)
                handle = launcher_for(spec.launcher).adopt(rec, run_dir)
                job = _Job(row.id, spec, run_dir, handle, row.started_at or time.time())
                self._start_watch(job)
                adopted.append(row.id)
                self.notify(f"{row.name}: re-adopted after a supervisor restart [{row.id}]", False)
            else:
                lost.append(row.id)
                self.notify(
                    f"{row.name}: lost: its job died while no supervisor watched [{row.id}]", True
                )
        return adopted, lost
