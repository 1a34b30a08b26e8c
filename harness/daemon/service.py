"""The service: everything one Harness process hosts on one asyncio loop.

``Service`` composes the supervisor, the outbox delivery worker, the heartbeat scheduler
(APScheduler 3, ``AsyncIOScheduler``) and the sidecar HTTP API with the run routes. The
daemon (``harness serve``) and the foreground ``harness run`` both use it, so a run gets
the same heartbeats and alerts whichever way it was started.

Heartbeats are scheduled jobs, not promises: they fire on the loop every
``heartbeat_s`` whatever the jobs do (every blocking call of the service runs in a
thread, so a hung job or a slow disk cannot hold the loop), with ``coalesce`` and a
misfire grace time so a suspended laptop sends one late heartbeat, not a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

import mistakes as ml
from harness.core.heartbeat import HeartbeatView, build_heartbeat
from harness.daemon.config import Settings
from harness.runtime.guard import GuardConfig
from harness.runtime.probes import read_ram
from harness.runtime.supervisor import Supervisor
from memory import (
    Store,
    StoreError,
    active_runs,
    clean_text,
    clip,
    last_heartbeat,
    record_heartbeat,
)
from sidecar import DeliveryWorker, InvalidMessageError, enqueue, has_undelivered

__all__ = ["Echo", "Service"]

log = logging.getLogger("harness.service")

Echo = Callable[[str, bool], None]


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.heartbeat_s = settings.heartbeat.interval_s
        self.host_name = host_name or socket.gethostname()
        self.echo: Echo = echo or (lambda text, alert: None)
        self.worker = worker or DeliveryWorker(store, settings.delivery())
        self.supervisor = Supervisor(
            store,
            settings.paths.runs_dir,
            notify=self.notify,
            cards=self.card,
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

    def _enqueue(self, text: str | None, embeds: list[dict[str, Any]] | None, kind: str) -> None:
        with self.store.write() as s:
            enqueue(session=s, text=text, embeds=embeds, kind=kind)

    async def send(
        self,
        text: str | None = None,
        *,
        embeds: list[dict[str, Any]] | None = None,
        kind: str = "text",
    ) -> None:
        """Persist a message in the outbox and wake the delivery worker."""
        await asyncio.to_thread(self._enqueue, text, embeds, kind)
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

    def _store_heartbeat(self, view: HeartbeatView, now: float) -> None:
        with self.store.write() as s:
            record_heartbeat(
                session=s, text=view.text, health=view.health, payload=view.payload, ts=now
            )
            enqueue(session=s, embeds=[view.embed], kind="heartbeat")

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
        await asyncio.to_thread(self._store_heartbeat, view, now)
        self.worker.wake()
        self.echo(view.text, False)
        return view
