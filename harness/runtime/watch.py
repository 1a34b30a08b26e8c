"""The watch loop of one run: observe the job, feed its machine, carry out the actions.

Every ``TAIL_EVERY_S`` the loop reads new metric lines, polls the process, samples the
probes every ``watch.sample_every_s``, reads abort requests every ``CONTROL_EVERY_S`` and
queues a progress write every ``PROGRESS_EVERY_S``. Everything blocking runs in a worker
thread; nothing here waits on the store except the end of the run (bounded).

The loop never raises and never leaves the job unwatched (issue 10):

- store writes go through the run's :class:`~harness.runtime.guard.RunWriter`, so a
  failing store degrades (fallback file, one stderr line) while the rules, an abort asked
  through this process and the machine's own decisions keep working;
- once the store has failed for ``give_up_s`` the machine is told
  :class:`~harness.core.machine.SupervisionLost` and the job is stopped gracefully;
- an iteration that raises is logged once (then rate-limited on stderr) and the next one
  runs; the actions decided but not yet carried out wait for it. If iterations keep
  failing for ``give_up_s`` the job is stopped the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from harness.core.machine import (
    AbortRequested,
    Action,
    Began,
    Exited,
    Finish,
    GpuReading,
    MetricLines,
    Notify,
    ProbeSample,
    Queued,
    RecordIncident,
    Relaunch,
    RunMachine,
    SupervisionLost,
    Terminate,
    Tick,
)
from harness.core.rules import Finding
from harness.core.spec import RunSpec
from harness.job.protocol import METRICS_FILE, STDERR_FILE
from harness.runtime import procs
from harness.runtime.chart import UTIL_FILE, UtilLog
from harness.runtime.controls import update_controls
from harness.runtime.guard import GuardConfig, Outcome, RunWriter, describe_error, settled
from harness.runtime.launchers import JobHandle, launcher_of
from harness.runtime.launchers.slurm import WAITING, SchedulerView
from harness.runtime.preflight import job_cwd, launch_env
from harness.runtime.probes import CpuProbe, GpuProbe, NodeProbe, read_ram
from harness.runtime.records import (
    final_row,
    mark_started,
    progress_fields,
    read_abort,
    save_progress,
    set_fields,
    submit_finish,
    submit_incident,
)
from harness.runtime.specs import resolve_command, with_resume
from harness.runtime.tail import MetricsTail, TailBatch
from memory import Run, Store, clean_text

__all__ = [
    "CONTROL_EVERY_S",
    "PROGRESS_EVERY_S",
    "TAIL_EVERY_S",
    "CardFn",
    "EndedFn",
    "Job",
    "Watch",
]

log = logging.getLogger("harness.supervisor")

TAIL_EVERY_S = 0.2
CONTROL_EVERY_S = 0.5
PROGRESS_EVERY_S = 2.0
STDERR_TAIL_BYTES = 4096
NotifyFn = Callable[[str, bool], None]
CardFn = Callable[[str, dict[str, Any]], None]  # (text for the terminal, Discord embed)
#: an end-of-run alert: (text, the final row); the daemon sends it with the run's chart
EndedFn = Callable[[str, Run], None]


@dataclass
class Job:
    """A started job as the supervisor tracks it."""

    run_id: str
    spec: RunSpec
    run_dir: Path
    handle: JobHandle
    started_wall: float
    row: Run  # what this process knows of the row: the answer when the store is down
    writer: RunWriter
    task: asyncio.Task[Run] | None = None
    terminating: asyncio.Task[procs.Escalation] | None = None
    abort_here: tuple[str, str] | None = None  # (reason, by) asked through this process


@dataclass
class _State:
    """The loop's own state between iterations."""

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


def tail_text(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file as clean text; "" for anything not a plain file."""
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


class Watch:
    """Watches one job until it has ended; :meth:`run` returns the final row."""

    def __init__(
        self,
        job: Job,
        *,
        store: Store,
        guard: GuardConfig,
        notify: NotifyFn,
        cards: CardFn | None = None,
        ended: EndedFn | None = None,
        gpu: Callable[[], Awaitable[GpuProbe]],
        now: float,
    ) -> None:
        self.job = job
        self.store = store
        self.guard = guard
        self.notify = notify
        self.cards = cards  # where an alert with an embed goes (the daemon: Discord)
        self.ended = ended  # where the end-of-run alert goes (the daemon: with the chart)
        self._final: Run | None = None  # the final row, once Finish was carried out
        self._util = UtilLog(job.run_dir / UTIL_FILE)
        self._gpu = gpu
        mono_start = now - max(time.time() - job.started_wall, 0.0)
        self.machine = RunMachine(job.spec, started_at=mono_start)
        self._tail = MetricsTail(job.run_dir / METRICS_FILE, root=job.run_dir)
        self._cpu = CpuProbe(job.handle.processes)
        self._state = _State(now, now, now)
        self._gpu_error = "no GPU probe"  # why there are no GPU readings, when there are none
        self._began = False  # a scheduler's job: seen running (its clocks started)

    async def run(self) -> Run:
        loop = asyncio.get_running_loop()
        job, state = self.job, self._state
        final: Run | None = None
        try:
            gpu = await self._gpu_or_none()
            while final is None:
                now = loop.time()
                try:
                    final = await self._step(gpu, now)
                    state.error_since = None
                except Exception as exc:  # never out of here: the job would go unwatched
                    final = await self._step_failed(exc, now)
                if final is None:
                    await asyncio.sleep(TAIL_EVERY_S)
        finally:
            if state.abort_read is not None:
                state.abort_read.cancel()
            if job.terminating is not None and not job.terminating.done():
                with contextlib.suppress(Exception):
                    await job.terminating
        return final

    async def _gpu_or_none(self) -> GpuProbe | None:
        try:
            return await self._gpu()
        except Exception as exc:  # no GPU figures, but the job is still watched
            self._gpu_error = f"no GPU probe: {describe_error(exc)}"
            log.error("watching %s: %s", self.job.run_id, self._gpu_error)
            return None

    # -- one iteration --------------------------------------------------------------------

    async def _step(self, gpu: GpuProbe | None, now: float) -> Run | None:
        """Observe, decide, act; the final row once the run is over."""
        job, machine, state = self.job, self.machine, self._state
        acts = state.acts
        acts += self._lines(await asyncio.to_thread(self._tail.read_new), now)
        exited, code = await asyncio.to_thread(job.handle.poll)
        view = job.handle.scheduler()
        if exited:
            acts += self._lines(await asyncio.to_thread(self._tail.read_new), now)
            stderr = await asyncio.to_thread(tail_text, job.run_dir / STDERR_FILE)
            vanished = not await asyncio.to_thread(job.run_dir.is_dir)
            ended = view.state if view is not None else None
            acts += machine.handle(
                Exited(
                    now,
                    code,
                    stderr,
                    str(job.run_dir) if vanished else None,
                    scheduler_state=ended,
                    scheduler_detail=view.detail if view is not None else "",
                )
            )
        else:
            if view is not None:
                acts += self._scheduled(view, now)
            if machine.waiting:  # queue time: nothing to sample, nothing judged
                acts += machine.handle(Tick(now))
            elif now >= state.next_sample:
                state.next_sample = now + job.spec.watch.sample_every_s
                sample = await self._sample(gpu, now)
                acts += machine.handle(sample)
                await self._record_util(sample)
            else:
                acts += machine.handle(Tick(now))
        if not exited:
            acts += await self._controls(now)
        final = await self._carry_out()
        if final is None and now >= state.next_progress:
            state.next_progress = now + PROGRESS_EVERY_S
            fields = progress_fields(machine, at=time.time())
            if job.spec.launcher == "torchrun":  # and each rank's rate, read in the worker
                fn = partial(save_progress, self.store, job.run_id, fields, job.run_dir)
            else:
                fn = partial(set_fields, self.store, job.run_id, fields)
            job.writer.submit("save progress", fn, fields, key="progress")
        return final

    def _scheduled(self, view: SchedulerView, now: float) -> list[Action]:
        """A scheduler's job: queue time (judged by nothing), its start, its resubmissions."""
        job, machine = self.job, self.machine
        acts: list[Action] = []
        for note in view.notes:  # the launcher resubmitted the job (requeue_on)
            finding = Finding("scheduler_requeue", "warn", note, {"state": view.state})
            acts += [
                RecordIncident(finding, "warn", "resubmitted"),
                Notify(f"{job.spec.name}: {note}"),
            ]
            self._began = False
        if view.state in WAITING or view.state == "SUBMITTED":
            acts += machine.handle(Queued(now, view.reason or "submitted", view.waited_s))
        elif not self._began:
            self._began = True
            acts += machine.handle(Began(now, view.where))
            fields = {"status": "running", "started_at": time.time()}
            fn = partial(set_fields, self.store, job.run_id, fields)
            job.writer.submit("mark the job running", fn, fields)
        return acts

    def _lines(self, batch: TailBatch, now: float) -> list[Action]:
        if not (batch.records or batch.garbage or batch.oversized or batch.unreadable):
            return []
        event = MetricLines(
            now,
            batch.records,
            batch.garbage,
            batch.oversized,
            batch.first_garbage,
            batch.unreadable,
        )
        return self.machine.handle(event)

    async def _sample(self, gpu: GpuProbe | None, now: float) -> ProbeSample:
        cpu, handle = self._cpu, self.job.handle
        nodes = handle.nodes()
        if nodes is not None:  # the job runs elsewhere: its node agents sampled it
            return await asyncio.to_thread(_from_nodes, nodes, now)

        def probe() -> ProbeSample:
            c = cpu.sample()
            ram = read_ram()
            busy = vram = vtotal = None
            readings: tuple[GpuReading, ...] = ()
            error: str | None = self._gpu_error
            if gpu is not None and gpu.available:
                pids = [p.pid for p in handle.processes()]
                g = gpu.sample(pids)
                busy, vram, vtotal = g.busy, g.mem_used_bytes, g.mem_total_bytes
                readings = tuple(
                    GpuReading(
                        d.index,
                        d.util,
                        d.sm_activity,
                        d.mem_used_bytes,
                        d.mem_total_bytes,
                        held=bool(d.job_pids),
                    )
                    for d in g.devices
                )
                error = None if g.available else (gpu.unavailable_reason or "NVML unavailable")
            elif gpu is not None:
                error = gpu.unavailable_reason or "NVML unavailable"
            return ProbeSample(
                now,
                c.util,
                ram.available_bytes,
                busy,
                vram,
                vtotal,
                c.available_util,
                gpus=readings,
                gpu_error=error,
            )

        return await asyncio.to_thread(probe)

    async def _record_util(self, sample: ProbeSample) -> None:
        """Keep the sample in the run's utilisation series (``util.jsonl``), when due."""
        wall = time.time()
        if not self._util.due(wall):
            return
        held = [g for g in sample.gpus if g.held]
        shown = held or (list(sample.gpus) if self.job.spec.device.startswith("cuda") else [])
        gpus = {str(g.index): g.busy for g in shown}
        await asyncio.to_thread(self._util.add, wall, sample.cpu_util, gpus)

    async def _controls(self, now: float) -> list[Action]:
        """Aborts asked here or in the database, and the store's health."""
        job, machine, state = self.job, self.machine, self._state
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

    async def _step_failed(self, exc: Exception, now: float) -> Run | None:
        """An iteration raised: say so (rate-limited), and stop the job if it goes on."""
        job, machine, state = self.job, self.machine, self._state
        state.errors += 1
        if state.error_since is None:
            state.error_since = now
        error = describe_error(exc)
        if state.errors == 1:
            log.error("watching %s: %s", job.run_id, error, exc_info=exc)
        record = {"error": error, "iterations_failed": state.errors}
        await job.writer.report("an error in the watch loop", error, record, always=False)
        failing = now - state.error_since
        if failing > self.guard.give_up_s and not state.gave_up:
            state.gave_up = True
            cause = f"the watch loop has failed for {failing:.0f} s: {error}"
            await job.writer.report("stopping the job", cause, record, always=True)
            state.acts += machine.handle(SupervisionLost(now, cause, record))
        elif state.gave_up and failing > 2 * self.guard.give_up_s and _done(job.terminating):
            state.acts += machine.handle(Exited(now, None, ""))  # stopped, and still no answer
        try:
            return await self._carry_out()
        except Exception as again:  # what is left waits for the next iteration
            log.error("watching %s: %s", job.run_id, describe_error(again))
            return None

    # -- actions --------------------------------------------------------------------------

    async def _relaunch(self, act: Relaunch) -> None:
        """A rollback: the controls written, the job started again from the checkpoint.

        The old job is gone (the machine decided this on its exit). A start that fails
        ends the run as a job that could not start would.
        """
        job = self.job
        spec = job.spec
        if job.terminating is not None:
            with contextlib.suppress(Exception):
                await job.terminating
            job.terminating = None
        try:
            if act.controls:
                await asyncio.to_thread(update_controls, job.run_dir, dict(act.controls))
            argv = resolve_command(spec.command, run_dir=job.run_dir, args=spec.args)
            argv = with_resume(argv, spec.resume, act.checkpoint)
            launcher = launcher_of(spec)
            env = launch_env(spec, job.run_dir, job.run_id)
            handle = await asyncio.to_thread(
                launcher.start,
                argv,
                run_id=job.run_id,
                run_dir=job.run_dir,
                cwd=job_cwd(spec),
                env=env,
            )
        except Exception as exc:  # the job cannot start again: the run ends failed
            error = describe_error(exc)
            now = asyncio.get_running_loop().time()
            self._state.acts += self.machine.handle(
                Exited(now, 127, f"harness: the rollback could not start the job: {error}")
            )
            return
        job.handle = handle
        self._cpu = CpuProbe(handle.processes)
        self._began = False  # a scheduler's new job waits in the queue first
        started = time.time()
        rec = handle.record
        fn = partial(mark_started, self.store, job.run_id, rec, started, local=not launcher.remote)
        job.writer.submit("mark the job started again", fn, {"pid": rec.pid})
        self.notify(
            f"{spec.name}: resumed from {act.checkpoint} (rollback {act.attempt}) [{job.run_id}]",
            False,
        )

    async def _carry_out(self) -> Run | None:
        """Execute the decided actions in order; one that raises is dropped, not retried."""
        acts, final = self._state.acts, None
        while acts:
            final = await self._execute(acts.pop(0)) or final
        return final

    async def _execute(self, act: Action) -> Run | None:
        job, store = self.job, self.store
        if isinstance(act, RecordIncident):
            submit_incident(job.writer, store, job.run_id, act.finding, act.severity, act.action)
        elif isinstance(act, Notify):
            try:
                if self._final is not None and act.alert and self.ended is not None:
                    self.ended(f"{act.text} [{job.run_id}]", self._final)
                elif act.embed is not None and self.cards is not None:
                    self.cards(f"{act.text} [{job.run_id}]", dict(act.embed))
                else:
                    self.notify(f"{act.text} [{job.run_id}]", act.alert)
            except Exception as exc:  # a broken channel must not stop the actions after it
                log.error("notify for %s: %s", job.run_id, describe_error(exc))
        elif isinstance(act, Terminate):
            fields = {"status": "starting" if act.restart else "aborting"}
            job.writer.submit(
                "mark the run stopping", partial(set_fields, store, job.run_id, fields), fields
            )
            if job.terminating is None:
                w = job.spec.watch
                job.terminating = asyncio.get_running_loop().create_task(
                    asyncio.to_thread(
                        job.handle.terminate, int_grace=w.int_grace_s, term_grace=w.term_grace_s
                    )
                )
        elif isinstance(act, Relaunch):
            await self._relaunch(act)
        elif isinstance(act, Finish):
            result = {**act.result, "progress": self.machine.progress.snapshot()}
            code = act.result.get("exit_code")
            future = submit_finish(
                job.writer, store, job.run_id, act.status, act.summary, result, code
            )
            outcome = await settled(future, self.guard.finish_wait_s)
            row = outcome.value if outcome.ok else None
            if row is None:  # the store is down: what this process knows, as the answer
                row = final_row(job.row, act.status, act.summary, result, code)
            self._final = row  # the alert that follows is the end-of-run one
            return row
        return None


def _from_nodes(nodes: NodeProbe, now: float) -> ProbeSample:
    """The node agents' fresh readings as one sample: the rules apply to them unchanged."""
    n = nodes.combined()
    held = [g for g in n.gpus if g.held]
    busy = [g.busy for g in held if g.busy is not None]
    used = [g.mem_used for g in held if g.mem_used is not None]
    total = [g.mem_total for g in held if g.mem_total is not None]
    return ProbeSample(
        now,
        n.cpu_util,
        n.ram_available,
        sum(busy) / len(busy) if busy else None,
        sum(used) if used else None,
        sum(total) if total else None,
        n.cpu_available,
        gpus=n.gpus,
        gpu_error=n.gpu_error,
    )


def _done(task: asyncio.Task[Any] | None) -> bool:
    return task is not None and task.done()
