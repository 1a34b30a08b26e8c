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
before they are stored (``harness.runtime.records``); every store write goes through the
run's :class:`~harness.runtime.guard.RunWriter` (in order, off the watch loop, retried,
and kept in ``supervisor-fallback.jsonl`` when it still fails), so the rules, Ctrl-C and
the API's abort keep working while the store is down. The watch loop of each run is
``harness.runtime.watch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from harness._atomic import write_json_atomic
from harness.core.machine import RunMachine
from harness.core.rules import Finding
from harness.core.spec import RunSpec
from harness.errors import HarnessError, LaunchRefused, SpawnError, SpecError
from harness.job.protocol import CONTROLS_FILE, METRICS_FILE
from harness.runtime import procs
from harness.runtime.guard import (
    FALLBACK_FILE,
    GuardConfig,
    RunWriter,
    Say,
    describe_error,
    say_stderr,
    settled,
)
from harness.runtime.launchers import launcher_of
from harness.runtime.orphans import claim_orphans
from harness.runtime.preflight import job_cwd, launch_env, preflight_checks
from harness.runtime.probes import GpuProbe
from harness.runtime.records import (
    insert_run,
    mark_started,
    progress_fields,
    read_abort,
    set_fields,
    stored,
    submit_finish,
    submit_incident,
)
from harness.runtime.specs import resolve_command
from harness.runtime.watch import (
    CONTROL_EVERY_S,
    PROGRESS_EVERY_S,
    TAIL_EVERY_S,
    CardFn,
    EndedFn,
    Job,
    NotifyFn,
    Watch,
)
from memory import TERMINAL, Run, Store, clean_text, request_abort

__all__ = [
    "CONTROL_EVERY_S",
    "PROGRESS_EVERY_S",
    "TAIL_EVERY_S",
    "GuardConfig",
    "Supervisor",
    "new_run_id",
]


def new_run_id(name: str, *, now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def _self_identity() -> tuple[int, float]:
    me = psutil.Process()
    return me.pid, me.create_time()


def _make_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """The run's private directory (0700) with its spec, controls and empty metrics file."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(mode=0o700)
    os.chmod(run_dir, 0o700)  # whatever the umask
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    write_json_atomic(run_dir / CONTROLS_FILE, spec.controls)
    (run_dir / METRICS_FILE).touch()


class Supervisor:
    """Launches and watches runs on the current event loop.

    ``guard`` sets how store failures are retried and when supervision gives up;
    ``say`` is where a degraded supervisor says so (one line each, stderr by default);
    ``ended`` gets the end-of-run alert with the final row (else ``notify`` does).
    """

    def __init__(
        self,
        store: Store,
        runs_dir: Path,
        *,
        notify: NotifyFn | None = None,
        cards: CardFn | None = None,
        ended: EndedFn | None = None,
        gpu: GpuProbe | None = None,
        guard: GuardConfig | None = None,
        say: Say | None = None,
    ) -> None:
        self.store = store
        self.runs_dir = Path(runs_dir)
        self.notify: NotifyFn = notify or (lambda text, alert: None)
        self.cards = cards  # alerts with an embed (a diagnosis card); None: their text
        self.ended = ended  # the end-of-run alert, with the final row (the chart's run)
        self.guard = guard or GuardConfig()
        self._say: Say = say or say_stderr
        self._gpu = gpu
        self._gpu_owned = gpu is None
        self._jobs: dict[str, Job] = {}
        self._writers: dict[str, RunWriter] = {}  # a finished run's final row may be retried
        self.machines: dict[str, RunMachine] = {}
        self._me = _self_identity()

    # -- lifecycle ----------------------------------------------------------------------

    async def _gpu_probe(self) -> GpuProbe:
        if self._gpu is None:
            self._gpu = await asyncio.to_thread(GpuProbe)
        return self._gpu

    async def close(self) -> None:
        """Stop watching (jobs keep running) and writing; a last second for queued writes."""
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job.task
        for writer in self._writers.values():
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
        for done in [r for r, w in self._writers.items() if r not in self._jobs and w.idle]:
            del self._writers[done]
        writer = RunWriter(run_id, run_dir / FALLBACK_FILE, self.guard, self._say)
        self._writers[run_id] = writer
        return writer

    # -- launching ----------------------------------------------------------------------

    async def launch(self, spec: RunSpec, *, source: str = "") -> str:
        """Create the run, run the pre-launch checklist, start the job; returns the run id.

        Raises ``LaunchRefused`` (after recording the run as failed, with incidents)
        when a check fails, the job cannot be started or the run cannot be recorded at
        all, and ``SpecError`` for a program that does not exist or a launcher this
        version does not have.
        """
        launcher = launcher_of(spec)
        run_id = new_run_id(spec.name)
        runs_dir = self.runs_dir.resolve()
        run_dir = (runs_dir / run_id).resolve()
        if run_dir.parent != runs_dir:  # the name is validated; this is the belt and braces
            raise SpecError(f"run directory {run_dir} would leave {runs_dir}")
        try:
            await asyncio.to_thread(_make_run_dir, run_dir, spec)
        except OSError as exc:  # a full disk, a read-only state dir: nothing was started
            raise LaunchRefused(
                f"refused: cannot create the run directory {run_dir}: {exc.strerror or exc}"
            ) from None
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
        inserted = await settled(
            writer.submit("record the new run", fn, known.model_dump()), self.guard.finish_wait_s
        )
        if not inserted.ok:
            summary = f"refused: cannot record the run in {self.store.path}: {inserted.error}"
            self.notify(f"{spec.name} ({run_id}): launch {summary}", True)
            raise LaunchRefused(summary)
        try:
            # the probe the run is watched with also decides whether a GPU job can be judged
            gpu = await self._gpu_probe() if spec.device.startswith("cuda") else None
            items = await asyncio.to_thread(
                preflight_checks,
                spec,
                run_dir=run_dir,
                run_id=run_id,
                store=self.store,
                clean=True,
                gpu=gpu,
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
            submit_incident(writer, self.store, run_id, finding, "warn", "terminated before launch")
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
                submit_incident(writer, self.store, run_id, finding, "abort", "refused launch")
            await self._refused(writer, spec, run_id, summary, {"checks": checks})
            raise LaunchRefused(summary)
        known.status, known.result = "starting", {"checks": checks}
        fields = {"status": "starting", "result": {"checks": checks}}
        writer.submit(
            "mark the run starting", partial(set_fields, self.store, run_id, fields), fields
        )
        argv = resolve_command(spec.command, run_dir=run_dir, args=spec.args)
        env = launch_env(spec, run_dir, run_id)
        try:
            handle = await asyncio.to_thread(
                launcher.start, argv, run_id=run_id, run_dir=run_dir, cwd=job_cwd(spec), env=env
            )
        except SpawnError as exc:
            await self._refused(writer, spec, run_id, f"failed: {exc}", {}, say=False)
            raise LaunchRefused(str(exc)) from None
        started = time.time()
        rec = handle.record
        status = "queued" if launcher.remote else "running"  # a scheduler's job waits first
        known.status, known.started_at, known.pid, known.create_time = (
            status,
            started,
            rec.pid,
            rec.create_time,
        )
        fn = partial(
            mark_started, self.store, run_id, rec, started, status=status, local=not launcher.remote
        )
        record = {"status": status, "started_at": started, "pid": rec.pid}
        await settled(writer.submit("mark the run started", fn, record), self.guard.finish_wait_s)
        job = Job(run_id, spec, run_dir, handle, started, known, writer)
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
        await settled(
            submit_finish(writer, self.store, run_id, "failed", summary, result, None),
            self.guard.finish_wait_s,
        )
        if say:
            self.notify(f"{spec.name} ({run_id}): launch {summary}", True)

    # -- watching -----------------------------------------------------------------------

    def _start_watch(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        watch = Watch(
            job,
            store=self.store,
            guard=self.guard,
            notify=self.notify,
            cards=self.cards,
            ended=self.ended,
            gpu=self._gpu_probe,
            now=loop.time(),
        )
        self._jobs[job.run_id] = job
        self.machines[job.run_id] = watch.machine
        job.task = loop.create_task(watch.run(), name=f"watch {job.run_id}")
        job.task.add_done_callback(lambda _: self._ended(job))

    def _ended(self, job: Job) -> None:
        if self._jobs.get(job.run_id) is job:
            del self._jobs[job.run_id]

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
        store fails (the failure is said once, and the run is stopped all the same).
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

    # The two recurring store operations, called directly by bench/supervisor.py.

    def _abort_request(self, run_id: str) -> tuple[str, str] | None:
        return read_abort(self.store, run_id)

    def _save_progress(self, run_id: str, machine: RunMachine) -> None:
        set_fields(self.store, run_id, progress_fields(machine, at=time.time()))

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
                launcher = launcher_of(spec)
                handle = launcher.adopt(rec, run_dir)
                started = row.started_at or time.time()
                writer = self._writer(row.id, run_dir)
                job = Job(row.id, spec, run_dir, handle, started, row, writer)
                self._start_watch(job)
                adopted.append(row.id)
                self.notify(f"{row.name}: re-adopted after a supervisor restart [{row.id}]", False)
            else:
                lost.append(row.id)
                self.notify(
                    f"{row.name}: lost: its job died while no supervisor watched [{row.id}]", True
                )
        return adopted, lost
