"""The supervisor shell: launches jobs, feeds the state machine, carries out its actions.

Everything blocking (SQLite, psutil, NVML, signalling, waiting for a process, files) runs
in a worker thread through ``asyncio.to_thread``, so one event loop can watch several
runs and, in ``harness serve``, host the HTTP API and the scheduler as well.

Before launch: stale processes of finished runs are terminated (M-025), free RAM is
checked (M-030), the spec's preflight commands run; a failure refuses the launch with an
incident. While running: metric lines are tailed every ``TAIL_EVERY_S``, probes sampled
every ``watch.sample_every_s``, abort requests read from the database, progress written
back. A supervisor that starts finds runs whose supervisor died and re-adopts those whose
root process still matches (PID, create time, marker), marking the others lost.

Nothing a job or the store does stops supervision (issue 10). Values are made strict JSON
before they are stored (``harness.runtime.records``); every store write goes through the run's
:class:`~harness.runtime.guard.RunWriter` (in order, off the watch loop, retried, and kept
in ``supervisor-fallback.jsonl`` when it still fails), so the rules, Ctrl-C and the API's
abort keep working while the store is down; once it has failed for ``give_up_s`` the job
is stopped gracefully, with the reason. One iteration of the watch loop that raises is
logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil

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
    SupervisionLost,
    Terminate,
    Tick,
)
from harness.core.rules import Finding
from harness.core.spec import RunSpec
from harness.errors import HarnessError, LaunchRefused, SpawnError, SpecError
from harness.job.protocol import CONTROLS_FILE, METRICS_FILE, STDERR_FILE
from harness.runtime import procs
from harness.runtime.guard import (
    FALLBACK_FILE,
    GuardConfig,
    Outcome,
    RunWriter,
    Say,
    describe_error,
    say_stderr,
)
from harness.runtime.launchers import JobHandle, launcher_for
from harness.runtime.orphans import claim_orphans
from harness.runtime.preflight import preflight_checks, run_env
from harness.runtime.probes import CpuProbe, GpuProbe, read_ram
from harness.runtime.records import (
    final_row,
    finish_run,
    incident_record,
    insert_run,
    mark_started,
    progress_fields,
    read_abort,
    record_finding,
    set_fields,
    stored,
)
from harness.runtime.specs import resolve_command
from harness.runtime.tail import MetricsTail, TailBatch
from memory import TERMINAL, Run, Store, clean_text, request_abort

__all__ = [
    "CONTROL_EVERY_S",
    "PROGRESS_EVERY_S",
    "TAIL_EVERY_S",
    "GuardConfig",
    "Supervisor",
    "new_run_id",
]

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
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        return clean_text(os.pread(fd, limit, max(size - limit, 0)).decode("utf-8", "replace"))
    except OSError:
        return ""
    finally:
        os.close(fd)


def _make_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """The run's private directory (0700) with its spec, controls and empty metrics file."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(mode=0o700)
    os.chmod(run_dir, 0o700)  # whatever the umask
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    write_json_atomic(run_dir / CONTROLS_FILE, spec.controls)
    (run_dir / METRICS_FILE).touch()


async def _settled(future: asyncio.Future[Outcome], timeout: float) -> Outcome:
    """The write's outcome, or a failure once ``timeout`` passes (the write goes on)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return Outcome(False, None, f"no answer from the store within {timeout:g} s")


# -- the supervisor -----------------------------------------------------------------------


@dataclass
class _Job:
    run_id: str
    spec: RunSpec
    run_dir: Path
    handle: JobHandle
    started_wall: float
    row: Run  # what this process knows of the row: the answer when the store is down
    writer: RunWriter
    task: asyncio.Task[Run] | None = None
    terminating: asyncio.Task[procs.Escalation] | None = None
    abort_here: tuple[str, str] | None = None  # (reason, by) asked through this supervisor


@dataclass
class _Loop:
    """The watch loop's own state between iterations."""

    next_sample: float
    next_control: float
    next_progress: float
    abort_read: asyncio.Task[Outcome] | None = None
    error_since: float | None = None  # first of the iterations failing in a row
    errors: int = 0  # iterations that failed, ever
    gave_up: bool = False
    # decided but not yet carried out: an iteration that raises leaves the rest for the
    # next one (the machine decides a Terminate only once)
    acts: list[Action] = field(default_factory=list)


class Supervisor:
    """Launches and watches runs on the current event loop.

    ``guard`` sets how store failures are retried and when supervision gives up;
    ``say`` is where a degraded supervisor says so (one line each, stderr by default).
    """

    def __init__(
        self,
        store: Store,
        runs_dir: Path,
        *,
        notify: NotifyFn | None = None,
        gpu: GpuProbe | None = None,
        guard: GuardConfig | None = None,
        say: Say | None = None,
    ) -> None:
        self.store = store
        self.runs_dir = Path(runs_dir)
        self.notify: NotifyFn = notify or (lambda text, alert: None)
        self.guard = guard or GuardConfig()
        self._say: Say = say or say_stderr
        self._gpu = gpu
        self._gpu_owned = gpu is None
        self._jobs: dict[str, _Job] = {}
        self._writers: list[RunWriter] = []
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
        for writer in self._writers:
            await writer.drain(timeout=1.0)
            writer.cancel()
            if writer.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer.task
        self._writers.clear()
        if self._gpu is not None and self._gpu_owned:
            await asyncio.to_thread(self._gpu.close)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    def _writer(self, run_id: str, run_dir: Path) -> RunWriter:
        self._writers = [w for w in self._writers if w.task is None or not w.task.done()]
        writer = RunWriter(run_id, run_dir / FALLBACK_FILE, self.guard, self._say)
        self._writers.append(writer)
        return writer

    def _incident(
        self, writer: RunWriter, run_id: str, finding: Finding, severity: str, action: str
    ) -> asyncio.Future[Outcome]:
        ts = time.time()
        return writer.submit(
            "record an incident",
            partial(record_finding, self.store, run_id, finding, severity, action, ts=ts),
            incident_record(finding, severity, action, ts),
        )

    def _finish(
        self,
        writer: RunWriter,
        run_id: str,
        status: str,
        summary: str,
        result: Mapping[str, Any],
        code: int | None,
    ) -> asyncio.Future[Outcome]:
        ended = time.time()
        record = {"status": status, "summary": summary, "result": result, "exit_code": code}
        fn = partial(finish_run, self.store, run_id, status, summary, result, code, ended)
        return writer.submit("record how the run ended", fn, record, persist=True)

    # -- launching ----------------------------------------------------------------------

    async def launch(self, spec: RunSpec, *, source: str = "") -> str:
        """Create the run, run the pre-launch checklist, start the job; returns the run id.

        Raises ``LaunchRefused`` (after recording the run as failed, with incidents)
        when a check fails, the job cannot be started or the run cannot be recorded at
        all, and ``SpecError`` for a program that does not exist or a launcher this
        version does not have.
        """
        launcher = launcher_for(spec.launcher)
        run_id = new_run_id(spec.name)
        runs_dir = self.runs_dir.resolve()
        run_dir = (runs_dir / run_id).resolve()
        if run_dir.parent != runs_dir:  # the name is validated; this is the belt and braces
            raise SpecError(f"run directory {run_dir} would leave {runs_dir}")
        await asyncio.to_thread(_make_run_dir, run_dir, spec)
        pid, ctime = self._me
        row = Run(
            id=run_id,
            name=spec.name,
            source=clean_text(source),
            spec=stored(spec.model_dump(mode="json")),
            status="preflight",
            run_dir=str(run_dir),
            supervisor_pid=pid,
            supervisor_create_time=ctime,
        )
        known = Run(**row.model_dump())
        writer = self._writer(run_id, run_dir)
        fn = partial(insert_run, self.store, row)
        inserted = await _settled(
            writer.submit("record the new run", fn, known.model_dump()), self.guard.finish_wait_s
        )
        if not inserted.ok:
            summary = f"refused: cannot record the run in {self.store.path}: {inserted.error}"
            self.notify(f"{spec.name} ({run_id}): launch {summary}", True)
            raise LaunchRefused(summary)
        try:
            items = await asyncio.to_thread(
                preflight_checks, spec, run_dir=run_dir, run_id=run_id, store=self.store, clean=True
            )
        except Exception as exc:  # the store or the OS failed under the checklist
            error = str(exc) if isinstance(exc, HarnessError) else describe_error(exc)
            summary = f"refused: the pre-launch checks could not run: {error}"
            await self._refused(writer, spec, run_id, summary, {})
            if isinstance(exc, HarnessError):
                raise
            raise LaunchRefused(summary) from None
        stale = next(i for i in items if i.name == "stale processes")
        if stale.evidence != "none found":
            finding = Finding("stale_processes", "warn", stale.evidence, {"detail": stale.evidence})
            self._incident(writer, run_id, finding, "warn", "terminated before launch")
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
                self._incident(writer, run_id, finding, "abort", "refused launch")
            await self._refused(writer, spec, run_id, summary, {"checks": checks})
            raise LaunchRefused(summary)
        known.status, known.result = "starting", {"checks": checks}
        fields = {"status": "starting", "result": {"checks": checks}}
        writer.submit(
            "mark the run starting", partial(set_fields, self.store, run_id, fields), fields
        )
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
            await self._refused(writer, spec, run_id, f"failed: {exc}", {}, say=False)
            raise LaunchRefused(str(exc)) from None
        started = time.time()
        rec = handle.record
        known.status, known.started_at, known.pid, known.create_time = (
            "running",
            started,
            rec.pid,
            rec.create_time,
        )
        fn = partial(mark_started, self.store, run_id, rec, started)
        record = {"status": "running", "started_at": started, "pid": rec.pid}
        await _settled(writer.submit("mark the run started", fn, record), self.guard.finish_wait_s)
        job = _Job(run_id, spec, run_dir, handle, started, known, writer)
        self._start_watch(job)
        return run_id

    async def _refused(
        self,
        writer: RunWriter,
        spec: RunSpec,
        run_id: str,
        summary: str,
        result: dict[str, Any],
        *,
        say: bool = True,
    ) -> None:
        await _settled(
            self._finish(writer, run_id, "failed", summary, result, None), self.guard.finish_wait_s
        )
        if say:
            self.notify(f"{spec.name} ({run_id}): launch {summary}", True)

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
        """Ask for an abort through the database, as any other process would.

        A run watched here is also told directly, so the abort happens even while the
        store fails (the failed write is kept in the run's fallback file).
        """
        job = self._jobs.get(run_id)
        if job is None or job.task is None or job.task.done():
            await self._db(self._request_abort, run_id, reason, by)
            return
        if job.abort_here is None:
            job.abort_here = (reason, by)
        fn = partial(self._request_abort, run_id, reason, by)
        await job.writer.call("record the abort request", fn, retries=self.guard.retries)

    def _request_abort(self, run_id: str, reason: str, by: str) -> None:
        with self.store.write() as s:
            request_abort(session=s, run_id=run_id, reason=reason, by=by)

    async def _watch(self, job: _Job) -> Run:
        loop = asyncio.get_running_loop()
        mono_start = loop.time() - max(time.time() - job.started_wall, 0.0)
        machine = RunMachine(job.spec, started_at=mono_start)
        self.machines[job.run_id] = machine
        tail = MetricsTail(job.run_dir / METRICS_FILE, root=job.run_dir)
        cpu = CpuProbe(job.handle.processes)
        now = loop.time()
        state = _Loop(now, now, now)
        final: Run | None = None
        try:
            gpu = await self._gpu_probe()
            while final is None:
                now = loop.time()
                try:
                    final = await self._step(job, machine, tail, cpu, gpu, state, now)
                    state.error_since = None
                except Exception as exc:  # never out of here: the job would go unwatched
                    final = await self._step_failed(job, machine, state, exc, now)
                if final is None:
                    await asyncio.sleep(TAIL_EVERY_S)
        finally:
            if state.abort_read is not None:
                state.abort_read.cancel()
            if job.terminating is not None and not job.terminating.done():
                with contextlib.suppress(Exception):
                    await job.terminating
        return final

    async def _step(
        self,
        job: _Job,
        machine: RunMachine,
        tail: MetricsTail,
        cpu: CpuProbe,
        gpu: GpuProbe,
        state: _Loop,
        now: float,
    ) -> Run | None:
        """One iteration of the watch loop: observe, decide, act; the final row at the end."""
        spec, acts = job.spec, state.acts
        acts += self._lines(machine, await asyncio.to_thread(tail.read_new), now)
        exited, code = await asyncio.to_thread(job.handle.poll)
        if exited:
            acts += self._lines(machine, await asyncio.to_thread(tail.read_new), now)
            stderr = await asyncio.to_thread(_tail_text, job.run_dir / STDERR_FILE)
            vanished = not await asyncio.to_thread(job.run_dir.is_dir)
            acts += machine.handle(
                Exited(now, code, stderr, str(job.run_dir) if vanished else None)
            )
        elif now >= state.next_sample:
            state.next_sample = now + spec.watch.sample_every_s
            acts += machine.handle(await self._sample(cpu, gpu, job, now))
        else:
            acts += machine.handle(Tick(now))
        if not exited:
            acts += await self._controls(job, machine, state, now)
        final = await self._carry_out(job, machine, state)
        if final is None and now >= state.next_progress:
            state.next_progress = now + PROGRESS_EVERY_S
            fields = progress_fields(machine, at=time.time())
            fn = partial(set_fields, self.store, job.run_id, fields)
            job.writer.submit("save progress", fn, fields, key="progress")
        return final

    @staticmethod
    def _lines(machine: RunMachine, batch: TailBatch, now: float) -> list[Action]:
        if not (batch.records or batch.garbage or batch.oversized or batch.unreadable):
            return []
        return machine.handle(
            MetricLines(
                now,
                batch.records,
                batch.garbage,
                batch.oversized,
                batch.first_garbage,
                batch.unreadable,
            )
        )

    async def _controls(
        self, job: _Job, machine: RunMachine, state: _Loop, now: float
    ) -> list[Action]:
        """Aborts asked here or in the database, and the store's health."""
        acts: list[Action] = []
        if job.abort_here is not None:
            acts += machine.handle(AbortRequested(now, *job.abort_here))
        failing = job.writer.failing_for()
        if failing > self.guard.give_up_s and machine.status == "running":
            cause = (
                f"the store {self.store.path} has failed for {failing:.0f} s "
                f"(limit {self.guard.give_up_s:g} s)"
            )
            evidence = {"failing_s": round(failing, 1), "give_up_s": self.guard.give_up_s}
            await job.writer.report("stopping the job", cause, evidence, always=True)
            acts += machine.handle(SupervisionLost(now, cause, evidence))
        if now >= state.next_control:
            state.next_control = now + CONTROL_EVERY_S
            read = state.abort_read
            if read is not None and read.done():
                state.abort_read = None
                outcome = read.result()
                if outcome.ok and outcome.value is not None:
                    reason, by = outcome.value
                    acts += machine.handle(AbortRequested(now, reason, by))
            if state.abort_read is None:
                fn = partial(read_abort, self.store, job.run_id)
                state.abort_read = asyncio.get_running_loop().create_task(
                    job.writer.call("read the abort request", fn)
                )
        return acts

    async def _step_failed(
        self, job: _Job, machine: RunMachine, state: _Loop, exc: Exception, now: float
    ) -> Run | None:
        """An iteration raised: say so (rate-limited), and stop the job if it goes on."""
        state.errors += 1
        if state.error_since is None:
            state.error_since = now
        if state.errors == 1:
            log.error("watching %s: %s", job.run_id, describe_error(exc), exc_info=exc)
        record = {"error": describe_error(exc), "iterations_failed": state.errors}
        await job.writer.report(
            "an error in the watch loop", describe_error(exc), record, always=False
        )
        failing = now - state.error_since
        if failing > self.guard.give_up_s and not state.gave_up:
            state.gave_up = True
            cause = f"the watch loop has failed for {failing:.0f} s: {describe_error(exc)}"
            await job.writer.report("stopping the job", cause, record, always=True)
            state.acts += machine.handle(SupervisionLost(now, cause, record))
        elif state.gave_up and failing > 2 * self.guard.give_up_s and _done(job.terminating):
            state.acts += machine.handle(Exited(now, None, ""))  # stopped, and still no answer
        try:
            return await self._carry_out(job, machine, state)
        except Exception as again:  # what is left waits for the next iteration
            log.error("watching %s: %s", job.run_id, describe_error(again))
            return None

    async def _carry_out(self, job: _Job, machine: RunMachine, state: _Loop) -> Run | None:
        """Execute the decided actions in order; one that raises is dropped, not retried."""
        final = None
        while state.acts:
            final = await self._execute(job, machine, state.acts.pop(0)) or final
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

    # The two recurring store operations, called directly by bench/supervisor.py.

    def _abort_request(self, run_id: str) -> tuple[str, str] | None:
        return read_abort(self.store, run_id)

    def _save_progress(self, run_id: str, machine: RunMachine) -> None:
        set_fields(self.store, run_id, progress_fields(machine, at=time.time()))

    async def _execute(self, job: _Job, machine: RunMachine, act: Action) -> Run | None:
        if isinstance(act, RecordIncident):
            self._incident(job.writer, job.run_id, act.finding, act.severity, act.action)
        elif isinstance(act, Notify):
            try:
                self.notify(f"{act.text} [{job.run_id}]", act.alert)
            except Exception as exc:  # a broken channel must not stop the actions after it
                log.error("notify for %s: %s", job.run_id, describe_error(exc))
        elif isinstance(act, Terminate):
            fields = {"status": "aborting"}
            fn = partial(set_fields, self.store, job.run_id, fields)
            job.writer.submit("mark the run aborting", fn, fields)
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
            future = self._finish(job.writer, job.run_id, act.status, act.summary, result, code)
            outcome = await _settled(future, self.guard.finish_wait_s)
            row = outcome.value if outcome.ok else None
            if row is None:  # the store is down: what this process knows, as the answer
                row = final_row(job.row, act.status, act.summary, result, code)
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
                started = row.started_at or time.time()
                writer = self._writer(row.id, run_dir)
                job = _Job(row.id, spec, run_dir, handle, started, row, writer)
                self._start_watch(job)
                adopted.append(row.id)
                self.notify(f"{row.name}: re-adopted after a supervisor restart [{row.id}]", False)
            else:
                lost.append(row.id)
                self.notify(
                    f"{row.name}: lost: its job died while no supervisor watched [{row.id}]", True
                )
        return adopted, lost


def _done(task: asyncio.Task[Any] | None) -> bool:
    return task is not None and task.done()
