"""``harness run | status | runs | abort | logs | check | adopt | presets``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mistakes as ml
from harness._cli.common import emit_json, fmt_time, settings_for
from harness._config import Settings
from harness._format import duration, key_metric_of, progress_line
from harness._orphans import abort_unsupervised, supervisor_alive
from harness._preflight import default_check_spec, preflight_checks
from harness._spec import RunSpec, apply_overrides, list_presets, load_spec, resolve_command
from harness._supervisor import LaunchRefused, Supervisor
from harness.cli import EXIT_FAILURE, EXIT_OK, UsageError
from memory import TERMINAL, Run, RunNotFoundError, Store, find_run, list_runs

if TYPE_CHECKING:
    from harness._daemon import DaemonInfo

PLAIN_EVERY_S = 10.0


def _store(settings: Settings) -> Store:
    return ml.open_log(settings.db_path)


def _spec(args: argparse.Namespace, settings: Settings) -> tuple[RunSpec, str]:
    spec, source = load_spec(args.spec, presets_dir=settings.presets_dir)
    if getattr(args, "set", None):
        spec = apply_overrides(spec, args.set)
    return spec, source


def _find(store: Store, ref: str) -> Run:
    with store.read() as s:
        try:
            return find_run(session=s, ref=ref)
        except RunNotFoundError as exc:
            raise UsageError(str(exc)) from None


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


async def _foreground(
    settings: Settings, spec: RunSpec, source: str, heartbeat_s: float | None = None
) -> int:
    """No daemon: this process hosts the supervisor, heartbeats and delivery for the run."""
    from harness._service import Service, service_config

    printer = _Printer()
    store = _store(settings)
    overrides = {"heartbeat_s": heartbeat_s} if heartbeat_s else {}
    config = service_config(settings, **overrides)
    service = Service(settings, store, config, echo=printer.message)
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
    from harness._client import DaemonClient, DaemonError
    from sidecar import load_or_create_token

    printer = _Printer()
    if spec.cwd is None:  # the daemon's working directory is not the user's
        spec = spec.model_copy(update={"cwd": str(Path.cwd())})
    with DaemonClient(info, load_or_create_token(settings.state_dir)) as client:
        try:
            run_id = client.launch(spec.model_dump(mode="json"), source)
        except DaemonError as exc:
            printer.message(f"{spec.name}: launch {exc}", alert=True)
            return EXIT_FAILURE if exc.status == 422 else 2
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
    from harness._daemon import daemon_info

    settings = settings_for(args)
    spec, source = _spec(args, settings)
    # A program that does not exist is bad input: one line and exit 2, no run recorded.
    resolve_command(spec.command, run_dir=settings.runs_dir)
    if args.heartbeat is not None and args.heartbeat <= 0:
        raise UsageError("--heartbeat must be a positive number of seconds")
    info = daemon_info(settings.state_dir)
    if info is not None and not args.foreground:
        return _follow_daemon(settings, spec, source, info)
    return asyncio.run(_foreground(settings, spec, source, args.heartbeat))


async def _adopt(settings: Settings) -> int:
    printer = _Printer()
    store = _store(settings)
    sup = Supervisor(store, settings, notify=printer.message)
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


# -- status, runs -------------------------------------------------------------------------


def _run_line(run: Run) -> str:
    key = key_metric_of(run.spec or {})
    if run.status in TERMINAL:
        took = duration((run.ended_at or 0) - run.started_at) if run.started_at else "-"
        return f"{run.id}  {run.status:<9} {took:>7}  {run.summary[:100]}"
    return f"{run.id}  " + progress_line(run.name, run.status, run.progress or {}, key)


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    with _store(settings) as store:
        if args.run:
            run = _find(store, args.run)
            if args.json:
                emit_json(run.as_dict())
                return EXIT_OK
            print(_run_line(run))
            print(
                f"  created {fmt_time(run.created_at)}  started {fmt_time(run.started_at)}"
                f"  ended {fmt_time(run.ended_at)}"
            )
            print(f"  run dir {run.run_dir}")
            for gate in (run.result or {}).get("gates", []):
                print(
                    f"  gate {gate['gate']}: value {gate['value']} "
                    f"{'pass' if gate['passed'] else 'FAIL'}"
                )
            with store.read() as s:
                for inc in ml.list_incidents(session=s, run_id=run.id, limit=10):
                    print(f"  incident #{inc.id} {inc.rule} {inc.mistake_id or ''}: {inc.summary}")
            return EXIT_OK
        with store.read() as s:
            runs = list_runs(session=s, active_only=True)
        if args.json:
            emit_json([r.as_dict() for r in runs])
            return EXIT_OK
        if not runs:
            print("no active runs")
        for run in runs:
            print(_run_line(run))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    with _store(settings) as store, store.read() as s:
        runs = list_runs(session=s, limit=args.limit)
    if args.json:
        emit_json([r.as_dict() for r in runs])
        return EXIT_OK
    if not runs:
        print("no runs yet")
    for run in runs:
        print(_run_line(run))
    return EXIT_OK


# -- abort ----------------------------------------------------------------------------------


def cmd_abort(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    reason = args.reason or "requested at the terminal"
    with _store(settings) as store:
        run = _find(store, args.run)
        if run.status in TERMINAL:
            raise UsageError(f"run {run.id} is already {run.status}; nothing to abort")
        if not supervisor_alive(run.supervisor_pid, run.supervisor_create_time):
            done = abort_unsupervised(store, run.id, reason)
            print(f"{run.id}: {done.summary if done else 'aborted'}")
            return EXIT_OK
        with store.write() as s:
            row = s.get(Run, run.id)
            assert row is not None
            row.abort_requested, row.abort_by = reason, "terminal"
            s.add(row)
        print(f"{run.id}: abort requested; waiting for the supervisor", file=sys.stderr)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            with store.read() as s:
                row = s.get(Run, run.id)
            if row is not None and row.status in TERMINAL:
                print(f"{run.id}: {row.summary}")
                return EXIT_OK
            time.sleep(0.2)
        print(f"{run.id}: abort requested; the run has not ended yet", file=sys.stderr)
        return EXIT_FAILURE


# -- logs -----------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    with _store(settings) as store:
        run = _find(store, args.run)
        path = Path(run.run_dir) / ("stderr.log" if args.stderr else "stdout.log")
        try:
            f = path.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        with f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    continue
                if not args.follow:
                    return EXIT_OK
                with store.read() as s:
                    row = s.get(Run, run.id)
                if row is None or row.status in TERMINAL:
                    sys.stdout.buffer.write(f.read())
                    return EXIT_OK
                time.sleep(0.3)


# -- check, presets -------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if args.spec:
        spec, _ = _spec(args, settings)
    else:
        spec = default_check_spec()
    with _store(settings) as store:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
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
    presets = list_presets(settings.presets_dir)
    if args.json:
        emit_json(presets)
        return EXIT_OK
    for name, where in presets.items():
        print(f"{name:<16} {where}")
    return EXIT_OK
