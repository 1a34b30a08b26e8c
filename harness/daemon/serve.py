"""``harness serve``: the long-lived daemon, and how other commands find it.

One daemon per state dir: an exclusive ``flock`` on ``serve.lock`` refuses a second
instance with a clear message (the lock dies with the process, so a SIGKILLed daemon
never leaves a stale lock). ``serve.json`` says where the running daemon listens.
SIGTERM (or SIGINT) stops watching and serving; jobs keep running and the next start
re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil
from aiohttp import web

import mistakes as ml
from harness.daemon.api import start_api
from harness.daemon.config import Settings
from harness.errors import AlreadyRunningError
from harness.runtime.procs import same_process

if TYPE_CHECKING:
    from harness.daemon.service import Echo, Service

__all__ = ["DaemonInfo", "daemon_info", "serve_forever"]

LOCK_FILE = "serve.lock"
INFO_FILE = "serve.json"


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    port: int
    started: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def daemon_info(state_dir: Path) -> DaemonInfo | None:
    """The running daemon of this state dir, or None (stale files are ignored)."""
    try:
        data = json.loads((state_dir / INFO_FILE).read_text(encoding="utf-8"))
        info = DaemonInfo(int(data["pid"]), int(data["port"]), float(data["started"]))
        create_time = float(data["create_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if same_process(info.pid, create_time) is not None else None


@contextlib.contextmanager
def _lock(state_dir: Path) -> Iterator[IO[str]]:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    f = (state_dir / LOCK_FILE).open("a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = daemon_info(state_dir)
            where = f" (pid {info.pid}, port {info.port})" if info else ""
            raise AlreadyRunningError(
                f"harness serve is already running for {state_dir}{where}; "
                "stop it first (systemctl --user stop harness, or kill -TERM its pid)"
            ) from None
        yield f
    finally:
        f.close()


def _start_bot(settings: Settings, service: Service, echo: Echo) -> asyncio.Task[None] | None:
    """The Discord bot, in this loop, when ``HARNESS_DISCORD_TOKEN`` is set."""
    token_secret = settings.discord.token
    if token_secret is None:
        return None
    from bot import run_bot
    from harness.daemon.botservice import BotService

    config = settings.bot()
    if not config.allow_users and not config.allow_roles:
        echo(
            "Discord bot: no [discord] allow_users/allow_roles: every mutating command will "
            "be refused",
            True,
        )
    token = token_secret.get_secret_value()
    echo("Discord bot: connecting (commands are synced only by `harness bot sync`)", False)
    return asyncio.get_running_loop().create_task(
        run_bot(BotService(service), token, config), name="discord bot"
    )


async def serve_forever(
    settings: Settings, *, echo: Echo, ready: asyncio.Event | None = None
) -> int:
    """Run the daemon until SIGTERM/SIGINT. Raises AlreadyRunningError."""
    from harness.daemon.service import Service

    home = settings.paths.home
    with _lock(home):
        store = ml.open_log(settings.paths.db_path)
        service = Service(settings, store, echo=echo)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        info_path = home / INFO_FILE
        bot_task: asyncio.Task[None] | None = None
        runner: web.AppRunner | None = None
        try:
            await service.start()
            runner, port = await start_api(service)
            await service.supervisor.adopt_orphans()
            bot_task = _start_bot(settings, service, echo)
            me = psutil.Process()
            info = {
                "pid": me.pid,
                "create_time": me.create_time(),
                "port": port,
                "started": time.time(),
            }
            tmp = info_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, info_path)
            mode = service.worker.config.mode or "not configured (messages are kept locally)"
            echo(
                f"harness serve: pid {me.pid}, API http://127.0.0.1:{port}, "
                f"heartbeat every {service.heartbeat_s:g} s, Discord {mode}",
                False,
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            echo("harness serve: stopping; running jobs keep running and will be re-adopted", False)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if bot_task is not None:
                bot_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await bot_task
            await service.stop()
            if runner is not None:
                await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                info_path.unlink()
            store.close()
    return 0
