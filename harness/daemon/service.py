"""The service: everything one Harness process hosts on one asyncio loop.

``Service`` composes the supervisor, the outbox delivery worker, the heartbeat scheduler
(APScheduler 3, ``AsyncIOScheduler``) and the sidecar HTTP API with the run routes. The
daemon (``harness serve``) and the foreground ``harness run`` both use it, so a run gets
the same heartbeats and alerts whichever way it was started.

Heartbeats are scheduled jobs, not promises: they fire on the loop every
``heartbeat_s`` whatever the jobs do (every blocking call of the service runs in a
thread, so a hung job or a slow disk cannot hold the loop), with ``coalesce`` and a
misfire grace time so a suspended laptop sends one late heartbeat, not a burst.

Charts (docs/charts.md): with ``[heartbeat] charts`` on, a heartbeat carries one PNG per
active run (at most 10, Discord's limit) and an end-of-run alert the run's PNG, drawn by
a child process (:class:`~harness.runtime.chart.ChartRenderer`) so this process never
loads matplotlib. A run's chart is drawn at most every ``chart_every_s`` (heartbeats in
between reuse it). A chart that fails or takes longer than ``chart_timeout_s`` is left
out: the text goes alone, and the renderer logs the failure once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

import mistakes as ml
from harness.core.heartbeat import HeartbeatView, build_heartbeat
from harness.daemon.config import Settings
from harness.runtime.chart import ChartRenderer, describe_run
from harness.runtime.guard import GuardConfig
from harness.runtime.probes import read_ram
from harness.runtime.supervisor import Supervisor
from memory import (
    Run,
    Store,
    StoreError,
    active_runs,
    clean_text,
    clip,
    last_heartbeat,
    record_heartbeat,
)
from sidecar import (
    MAX_FILES,
    Attachment,
    DeliveryWorker,
    InvalidMessageError,
    enqueue,
    has_undelivered,
    prepare,
    store_prepared,
)

__all__ = ["MAX_CHART_BYTES", "Echo", "Service", "chart_name"]

log = logging.getLogger("harness.service")

Echo = Callable[[str, bool], None]
MAX_CHART_BYTES = 200 * 1024  # a chart bigger than this is left out (they are ~50 KB)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def chart_name(run_id: str) -> str:
    """The attachment's file name for a run's chart: ``chart-<run id>.png``."""
    return f"chart-{_UNSAFE.sub('_', run_id)[:80]}.png"


class Service:
    """Supervisor + outbox delivery + heartbeats (+ the HTTP API when ``api`` is set)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        echo: Echo | None = None,
        worker: DeliveryWorker | None = None,
        host_name: str | None = None,
        renderer: ChartRenderer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.heartbeat_s = settings.heartbeat.interval_s
        self.host_name = host_name or socket.gethostname()
        self.echo: Echo = echo or (lambda text, alert: None)
        self.worker = worker or DeliveryWorker(store, settings.delivery())
        self.charts = settings.heartbeat.charts
        self.chart_every_s = settings.heartbeat.chart_every_s
        self.renderer = renderer or ChartRenderer(timeout_s=settings.heartbeat.chart_timeout_s)
        self._chart_cache: dict[str, tuple[float, bytes]] = {}  # run id -> (drawn at, PNG)
        self.supervisor = Supervisor(
            store,
            settings.paths.runs_dir,
            notify=self.notify,
            cards=self.card,
            ended=self.ended,
            guard=GuardConfig(give_up_s=settings.supervisor.store_give_up_s),
        )
        self.scheduler = AsyncIOScheduler()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, adopt: bool = False) -> None:
        if self.worker.enabled:
            self._worker_task = asyncio.get_running_loop().create_task(
                self.worker.run(), name="outbox delivery"
            )
        self.scheduler.add_job(
            self._scheduled_heartbeat,
            "interval",
            seconds=self.heartbeat_s,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(int(self.settings.heartbeat.misfire_grace_s), 1),
            id="heartbeat",
        )
        self.scheduler.start()
        if adopt:
            await self.supervisor.adopt_orphans()

    async def stop(self) -> None:
        """Stop watching (jobs keep running; the next start re-adopts them)."""
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        await self.supervisor.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker_task

    # -- messages -----------------------------------------------------------------------

    def _enqueue(
        self,
        text: str | None,
        embeds: list[dict[str, Any]] | None,
        kind: str,
        files: Sequence[Attachment] = (),
    ) -> None:
        with self.store.write() as s:
            enqueue(session=s, text=text, embeds=embeds, kind=kind, files=files)

    async def send(
        self,
        text: str | None = None,
        *,
        embeds: list[dict[str, Any]] | None = None,
        kind: str = "text",
        files: Sequence[Attachment] = (),
    ) -> None:
        """Persist a message (and its files, in the same transaction) in the outbox and
        wake the delivery worker."""
        await asyncio.to_thread(self._enqueue, text, embeds, kind, files)
        self.worker.wake()

    def notify(self, text: str, alert: bool) -> None:
        """Called by the supervisor: print at once, queue alerts for Discord at once.

        Never raises, and never leaves a failed task behind: an alert that cannot be
        queued (the store is failing) has been printed already and is logged once.
        """
        text = clean_text(text)
        self.echo(text, alert)
        if alert:
            task = asyncio.get_running_loop().create_task(self._queue_alert(text))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def card(self, text: str, embed: dict[str, Any]) -> None:
        """An alert with an embed (a diagnosis card): printed here, sent as the embed."""
        text = clean_text(text)
        self.echo(text, True)
        task = asyncio.get_running_loop().create_task(self._queue_card(text, embed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queue_card(self, text: str, embed: dict[str, Any]) -> None:
        try:
            await self.send(embeds=[embed], kind="alert")
        except (StoreError, InvalidMessageError) as exc:
            log.warning("a card could not be queued for Discord (%s): %s", exc, clip(text, 200))

    def ended(self, text: str, run: Run) -> None:
        """The end-of-run alert: printed at once, queued with the run's chart once drawn."""
        text = clean_text(text)
        self.echo(text, True)
        task = asyncio.get_running_loop().create_task(self._queue_final(text, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queue_final(self, text: str, run: Run) -> None:
        files = await self._charts([run], fresh=True) if self.charts else []
        try:
            await self.send(text, kind="alert", files=files)
        except InvalidMessageError as exc:  # the chart was refused: the text goes alone
            log.warning("charts: the end-of-run chart was refused (%s); sent without it", exc)
            await self._queue_alert(text)
        except StoreError as exc:
            log.warning("an alert could not be queued for Discord (%s): %s", exc, clip(text, 200))
        finally:
            self._chart_cache.pop(run.id, None)

    async def _queue_alert(self, text: str) -> None:
        try:
            await self.send(text, kind="alert")
        except (StoreError, InvalidMessageError) as exc:
            log.warning("an alert could not be queued for Discord (%s): %s", exc, clip(text, 200))

    async def flush(self, timeout: float) -> bool:
        """Wait (while the worker delivers) until the outbox is empty; False on timeout."""
        if not self.worker.enabled:
            return False
        if self._tasks:  # alerts still being written to the outbox
            await asyncio.wait(self._tasks, timeout=timeout)
        self.worker.wake()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not await asyncio.to_thread(self._undelivered):
                    return True
            except StoreError as exc:
                log.warning("cannot see the outbox: %s", exc)
                return False
            await asyncio.sleep(0.2)
        return False

    def _undelivered(self) -> bool:
        with self.store.read() as s:
            return has_undelivered(session=s)

    # -- heartbeats ---------------------------------------------------------------------

    def _gather(self) -> tuple[list[Any], list[Any], float | None]:
        with self.store.read() as s:
            runs = active_runs(session=s)
            last = last_heartbeat(session=s)
            since = last.ts if last is not None else time.time() - self.heartbeat_s
            incidents = list(reversed(ml.list_incidents(session=s, since=since)))
        return runs, incidents, since

    def _store_heartbeat(
        self, view: HeartbeatView, now: float, files: Sequence[Attachment] = ()
    ) -> None:
        """The heartbeat's record and its message (with the charts) in one transaction."""
        embed = dict(view.embed)
        if len(files) == 1:  # one run: its chart is the embed's image
            embed["image"] = {"url": f"attachment://{files[0].filename}"}
        try:
            message = prepare(embeds=[embed], kind="heartbeat", files=files)
        except InvalidMessageError as exc:  # never lose the heartbeat to its chart
            log.warning("charts: the heartbeat's charts were refused (%s); sent without", exc)
            message = prepare(embeds=[view.embed], kind="heartbeat")
        with self.store.write() as s:
            record_heartbeat(
                session=s, text=view.text, health=view.health, payload=view.payload, ts=now
            )
            store_prepared(session=s, messages=[message], now=now)

    def _run_incidents(self, run_id: str) -> list[tuple[float, str, str]]:
        with self.store.read() as s:
            found = ml.list_incidents(session=s, run_id=run_id, limit=50)
        return [(i.ts, i.rule, i.severity) for i in found]

    async def _chart(self, run: Run, *, fresh: bool) -> Attachment | None:
        """One run's chart (from the cache when drawn less than chart_every_s ago)."""
        cached = self._chart_cache.get(run.id)
        mono = time.monotonic()
        if cached is not None and not fresh and mono - cached[0] < self.chart_every_s:
            return Attachment(chart_name(run.id), cached[1], "image/png")
        try:
            incidents = await asyncio.to_thread(self._run_incidents, run.id)
        except StoreError as exc:
            log.warning("charts: the incidents of %s could not be read: %s", run.id, exc)
            incidents = []
        png = await self.renderer.render(describe_run(run, incidents))
        if png is None:
            return None
        if len(png) > MAX_CHART_BYTES:
            log.warning("charts: the chart of %s is %d bytes; left out", run.id, len(png))
            return None
        self._chart_cache[run.id] = (mono, png)
        return Attachment(chart_name(run.id), png, "image/png")

    async def _charts(self, runs: Sequence[Run], *, fresh: bool = False) -> list[Attachment]:
        """The charts of up to 10 runs (Discord's limit per message), drawn concurrently."""
        shown = [r for r in runs if r.run_dir][:MAX_FILES]
        if len(runs) > MAX_FILES:
            log.info(
                "charts: %d active runs; the heartbeat shows the first %d", len(runs), MAX_FILES
            )
        drawn = await asyncio.gather(*(self._chart(r, fresh=fresh) for r in shown))
        active = {r.id for r in runs}
        for gone in [r for r in self._chart_cache if r not in active]:
            if fresh:
                break
            del self._chart_cache[gone]
        return [a for a in drawn if a is not None]

    async def _scheduled_heartbeat(self) -> None:
        """The scheduler's job: a store that fails costs this heartbeat its record, not
        the schedule (APScheduler would log a traceback every interval)."""
        try:
            await self.heartbeat()
        except StoreError as exc:
            self.echo(f"heartbeat not recorded: {exc}", True)

    async def heartbeat(self) -> HeartbeatView:
        """Build, store, print and queue one heartbeat."""
        now = time.time()
        runs, incidents, _ = await asyncio.to_thread(self._gather)
        ram = await asyncio.to_thread(read_ram)
        view = build_heartbeat(
            runs=runs,
            incidents=incidents,
            ram_available=ram.available_bytes,
            host=self.host_name,
            now=now,
            interval_s=self.heartbeat_s,
        )
        files = await self._charts(runs) if self.charts and runs else []
        await asyncio.to_thread(self._store_heartbeat, view, now, files)
        self.worker.wake()
        self.echo(view.text, False)
        return view
