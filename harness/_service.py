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
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

import mistakes as ml
from harness._config import ConfigError, Settings
from harness._heartbeat import HeartbeatView, build_heartbeat
from harness._supervisor import Supervisor
from harness.probes import read_ram
from memory import Store, active_runs, last_heartbeat, record_heartbeat
from sidecar import DeliveryWorker, DiscordConfig, enqueue, has_undelivered

__all__ = ["Service", "ServiceConfig", "service_config"]

log = logging.getLogger("harness.service")

Echo = Callable[[str, bool], None]


@dataclass(frozen=True)
class ServiceConfig:
    heartbeat_s: float = 300.0
    misfire_grace_s: float = 60.0
    api_host: str = "127.0.0.1"
    api_port: int = 7777
    host_name: str = field(default_factory=socket.gethostname)
    discord: DiscordConfig = field(default_factory=DiscordConfig)


def _section(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return value


def _number(table: dict[str, Any], key: str, default: float, where: str, *, lo: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
        raise ConfigError(f"{where}.{key}: expected a number >= {lo:g}, got {value!r}")
    return float(value)


def service_config(settings: Settings, **overrides: Any) -> ServiceConfig:
    """Build the service section from ``harness.toml`` and the environment.

    ``[heartbeat] interval_s``, ``[sidecar] port``, ``[discord] channel_id, api_base``;
    the bot token and webhook URL come only from the environment.
    """
    raw = dict(settings.raw)
    source = str(settings.config_path or "harness.toml")
    hb = _section(raw, "heartbeat", source)
    sc = _section(raw, "sidecar", source)
    dc = _section(raw, "discord", source)
    known = {
        "heartbeat": {"interval_s", "misfire_grace_s"},
        "sidecar": {"port"},
        "discord": {
            "channel_id",
            "api_base",
            "timeout_s",
            "allow_users",
            "allow_roles",
            "read_users",
            "read_roles",
            "guild_id",
        },
    }
    for name, table in (("heartbeat", hb), ("sidecar", sc), ("discord", dc)):
        for key in table:
            if key not in known[name]:
                raise ConfigError(f"{source}: unknown key {name}.{key}")
    port = sc.get("port", 7777)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{source}: sidecar.port: expected 0-65535, got {port!r}")
    channel = dc.get("channel_id")
    if channel is not None:
        channel = str(channel)
    try:
        discord = DiscordConfig(
            bot_token=settings.discord_token if channel else None,
            channel_id=channel,
            webhook_url=settings.discord_webhook_url,
            api_base=str(dc.get("api_base", DiscordConfig.api_base)),
            timeout_s=_number(dc, "timeout_s", 10.0, "discord", lo=0.1),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: discord: {exc}") from None
    cfg = ServiceConfig(
        heartbeat_s=_number(hb, "interval_s", 300.0, "heartbeat", lo=0.1),
        misfire_grace_s=_number(hb, "misfire_grace_s", 60.0, "heartbeat", lo=0.0),
        api_port=port,
        discord=discord,
    )
    return ServiceConfig(**{**cfg.__dict__, **overrides})


class Service:
    """Supervisor + outbox delivery + heartbeats (+ the HTTP API when ``api`` is set)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        config: ServiceConfig,
        *,
        echo: Echo | None = None,
        worker: DeliveryWorker | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.config = config
        self.echo: Echo = echo or (lambda text, alert: None)
        self.worker = worker or DeliveryWorker(store, config.discord)
        self.supervisor = Supervisor(store, settings, notify=self.notify)
        self.scheduler = AsyncIOScheduler()
        self.heartbeats_sent = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker_task: asyncio.Task[None] | None = None
        self._runner: Any = None
        self.api_port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, api: bool = False, adopt: bool = False) -> None:
        if self.worker.enabled:
            self._worker_task = asyncio.get_running_loop().create_task(
                self.worker.run(), name="outbox delivery"
            )
        self.scheduler.add_job(
            self.heartbeat,
            "interval",
            seconds=self.config.heartbeat_s,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(int(self.config.misfire_grace_s), 1),
            id="heartbeat",
        )
        self.scheduler.start()
        if api:
            from harness._api import start_api

            self._runner, self.api_port = await start_api(self)
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
        if self._runner is not None:
            await self._runner.cleanup()

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
        """Called by the supervisor: print at once, queue alerts for Discord at once."""
        self.echo(text, alert)
        if alert:
            task = asyncio.get_running_loop().create_task(self.send(text, kind="alert"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self, timeout: float) -> bool:
        """Wait (while the worker delivers) until the outbox is empty; False on timeout."""
        if not self.worker.enabled:
            return False
        if self._tasks:  # alerts still being written to the outbox
            await asyncio.wait(self._tasks, timeout=timeout)
        self.worker.wake()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(self._undelivered):
                return True
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
            since = last.ts if last is not None else time.time() - self.config.heartbeat_s
            incidents = list(reversed(ml.list_incidents(session=s, since=since)))
        return runs, incidents, since

    def _store_heartbeat(self, view: HeartbeatView, now: float) -> None:
        with self.store.write() as s:
            record_heartbeat(
                session=s, text=view.text, health=view.health, payload=view.payload, ts=now
            )
            enqueue(session=s, embeds=[view.embed], kind="heartbeat")

    async def heartbeat(self) -> HeartbeatView:
        """Build, store, print and queue one heartbeat."""
        now = time.time()
        runs, incidents, _ = await asyncio.to_thread(self._gather)
        ram = await asyncio.to_thread(read_ram)
        view = build_heartbeat(
            runs=runs,
            incidents=incidents,
            ram_available=ram.available_bytes,
            host=self.config.host_name,
            now=now,
            interval_s=self.config.heartbeat_s,
        )
        await asyncio.to_thread(self._store_heartbeat, view, now)
        self.worker.wake()
        self.heartbeats_sent += 1
        self.echo(view.text, False)
        return view
