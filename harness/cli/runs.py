"""``harness run | adopt | check | presets``: starting runs and checking before one."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mistakes as ml
from harness.cli.common import emit_json, settings_for, store_for
from harness.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from harness.core.format import progress_line
from harness.core.spec import RunSpec, apply_overrides
from harness.daemon.config import Settings
from harness.errors import DaemonError, LaunchRefused
from harness.runtime.preflight import default_check_spec, preflight_checks
from harness.runtime.specs import list_presets, load_spec, resolve_command
from harness.runtime.supervisor import Supervisor
from memory import TERMINAL

if TYPE_CHECKING:
    from harness.daemon.serve import DaemonInfo

PLAIN_EVERY_S = 10.0


def _spec(args: argparse.Namespace, settings: Settings) -> tuple[RunSpec, str]:
    spec, source = load_spec(args.spec, presets_dir=settings.paths.presets_dir)
    if getattr(args, "set", None):
        spec = apply_overrides(spec, args.set)
    return spec, source


# -- run ----------------------------------------------------------------------------------


class _Printer:
    """The foreground view: a live line on a terminal, plain lines otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._live = False
        self._last_plain = 0.0

    def message(self, text: str, alert: bool = False) -> None:
        self._clear()
        mark = "!" if alert else "·"
        print(f"{mark} {text}", file=self.stream, flush=True)

    def progress(self, line: str) -> None:
        if self.tty:
            self._clear()
            self.stream.write(line[:200])
            self.stream.flush()
            self._live = True
        elif time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            print(line, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[2K")
            self._live = False


async def _foreground(settings: Settings, spec: RunSpec, source: str) -> int:
    """No daemon: this process hosts the supervisor, heartbeats and delivery for the run."""
    from harness.daemon.service import Service

    printer = _Printer()
    store = ml.open_log(settings.paths.db_path)
    service = Service(settings, store, echo=printer.message)
    sup = service.supervisor
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    started: list[str] = []  # the run id once the job runs
    interrupted: list[bool] = []

    def request_abort() -> None:
        pending.add(
            loop.create_task(sup.request_abort(started[0], "Ctrl-C at the terminal", by="terminal"))
        )

    def on_interrupt() -> None:
        printer.message("Ctrl-C: aborting the run cleanly (SIGINT, then SIGTERM, SIGKILL)")
        interrupted.append(True)
        if started:
            request_abort()

    # Installed before the launch: a Ctrl-C while the job starts must not kill this process
    # and leave the job running unwatched; the run is aborted as soon as it has an id.
    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, on_interrupt)
    try:
        await service.start()
        try:
            run_id = await sup.launch(spec, source=source)
        except LaunchRefused:
            return EXIT_FAILURE
        started.append(run_id)
        printer.message(f"{spec.name}: started {run_id} (logs: harness logs {run_id})")
        if interrupted:
            request_abort()
        waiter = asyncio.ensure_future(sup.wait(run_id))
        key = spec.shown_metric
        while not waiter.done():
            machine = sup.machines.get(run_id)
            if machine is not None:
                snap = machine.progress.snapshot()
                printer.progress(progress_line(spec.name, machine.status, snap, key))
            await asyncio.wait([waiter], timeout=1.0)
        run = waiter.result()
        if run.status == "succeeded":  # failures were announced as alerts already
            printer.message(f"{spec.name}: {run.summary}")
        await service.flush(timeout=15.0)  # the final alerts reach Discord before we exit
        return EXIT_OK if run.status == "succeeded" else EXIT_FAILURE
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await service.stop()
        store.close()


def _follow_daemon(settings: Settings, spec: RunSpec, source: str, info: DaemonInfo) -> int:
    """A daemon is running: submit the run to it and follow it until it ends."""
    from harness.daemon.client import DaemonClient
    from sidecar import load_or_create_token

    printer = _Printer()
    if spec.cwd is None:  # the daemon's working directory is not the user's
        spec = spec.model_copy(update={"cwd": str(Path.cwd())})
    with DaemonClient(info, load_or_create_token(settings.paths.home)) as client:
        try:
            run_id = client.launch(spec.model_dump(mode="json"), source)
        except DaemonError as exc:
            printer.message(f"{spec.name}: launch {exc}", alert=True)
            return EXIT_USAGE if exc.status == 400 else EXIT_FAILURE
        printer.message(f"{spec.name}: started {run_id} on harness serve (pid {info.pid})")
        key = spec.shown_metric
        aborted = False
        while True:
            try:
                run = client.run(run_id)
                if run["status"] in TERMINAL:
                    break
                printer.progress(progress_line(spec.name, run["status"], run["progress"], key))
                time.sleep(1.0)
            except KeyboardInterrupt:
                if not aborted:
                    aborted = True
                    printer.message("Ctrl-C: asking harness serve to abort the run cleanly")
                    client.abort(run_id, "Ctrl-C at the terminal")
            except DaemonError as exc:
                printer.message(f"lost contact with harness serve: {exc}", alert=True)
                return EXIT_FAILURE
        printer.message(f"{spec.name}: {run['summary']}", alert=run["status"] != "succeeded")
        return EXIT_OK if run["status"] == "succeeded" else EXIT_FAILURE


def cmd_run(args: argparse.Namespace) -> int:
    from harness.daemon.serve import daemon_info

    settings = settings_for(args)
    spec, source = _spec(args, settings)
    # A program that does not exist is bad input: one line and exit 2, no run recorded.
    resolve_command(spec.command, run_dir=settings.paths.runs_dir)
    info = daemon_info(settings.paths.home)
    if info is not None and not args.foreground:
        return _follow_daemon(settings, spec, source, info)
    return asyncio.run(_foreground(settings, spec, source))


async def _adopt(settings: Settings) -> int:
    printer = _Printer()
    store = ml.open_log(settings.paths.db_path)
    sup = Supervisor(store, settings.paths.runs_dir, notify=printer.message)
    try:
        adopted, lost = await sup.adopt_orphans()
        if not adopted:
            printer.message(f"nothing to adopt ({len(lost)} marked lost)")
            return EXIT_OK
        runs = await asyncio.gather(*(sup.wait(r) for r in adopted))
        for run in runs:
            printer.message(f"{run.name}: {run.summary}", alert=run.status != "succeeded")
        return EXIT_OK if all(r.status == "succeeded" for r in runs) else EXIT_FAILURE
    finally:
        await sup.close()
        store.close()


def cmd_adopt(args: argparse.Namespace) -> int:
    return asyncio.run(_adopt(settings_for(args)))


# -- check, presets -------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if args.spec:
        spec, _ = _spec(args, settings)
    else:
        spec = default_check_spec()
    with store_for(args) as store, tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        items = preflight_checks(
            spec,
            run_dir=Path(tmp),
            run_id=f"check-{int(time.time())}",
            store=store,
            clean=False,
        )
    if args.json:
        emit_json(
            [
                {
                    "name": i.name,
                    "passed": i.passed,
                    "evidence": i.evidence,
                    "rule": i.rule,
                    "mistake_ids": list(i.mistake_ids),
                }
                for i in items
            ]
        )
    else:
        for i in items:
            ids = f" ({', '.join(i.mistake_ids)})" if i.mistake_ids else ""
            print(f"{'PASS' if i.passed else 'FAIL'}  {i.name}{ids}: {i.evidence}")
    return EXIT_OK if all(i.passed for i in items) else EXIT_FAILURE


def cmd_presets(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    presets = list_presets(settings.paths.presets_dir)
    if args.json:
        emit_json(presets)
        return EXIT_OK
    for name, where in presets.items():
        print(f"{name:<16} {where}")
    return EXIT_OK
