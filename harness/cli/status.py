"""``harness status | runs | abort | logs | controls``: looking at runs and steering them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import mistakes as ml
from harness.cli.common import emit_json, fmt_time, store_for
from harness.cli.exits import EXIT_FAILURE, EXIT_OK
from harness.core.format import duration, key_metric_of, progress_line
from harness.core.overrides import CONTROL_RULES, check_control
from harness.core.spec import control_problem
from harness.core.values import toml_value
from harness.errors import ConflictError, HarnessError, NotFoundError, UsageError
from harness.job.protocol import CONTROLS_FILE, METRICS_FILE, STDERR_FILE, STDOUT_FILE
from harness.runtime.controls import update_controls
from harness.runtime.launchers.slurm import SCRIPT_FILE, STATE_FILE
from harness.runtime.launchers.torchrun import rank_logs
from harness.runtime.orphans import abort_unsupervised, supervisor_alive
from harness.runtime.tail import RankRate, rank_rates
from memory import TERMINAL, Run, Store, clip, find_run, list_runs, request_abort


def _find(store: Store, ref: str) -> Run:
    """A run by id, unique prefix or ``last``; ``memory.RunNotFoundError`` (exit 1) if none."""
    with store.read() as s:
        return find_run(session=s, ref=ref)


# -- status, runs -------------------------------------------------------------------------


def _run_line(run: Run) -> str:
    key = key_metric_of(run.spec or {})
    if run.status in TERMINAL:
        took = duration((run.ended_at or 0) - run.started_at) if run.started_at else "-"
        return f"{run.id}  {run.status:<9} {took:>7}  {clip(run.summary, 100)}"
    return f"{run.id}  " + progress_line(run.name, run.status, run.progress or {}, key)


def _ranks(run: Run) -> list[RankRate]:
    """Each rank's recent progress for a torchrun run ([] for any other)."""
    if (run.spec or {}).get("launcher") != "torchrun" or not run.run_dir:
        return []
    run_dir = Path(run.run_dir)
    return rank_rates(run_dir, run_dir / METRICS_FILE)


def _rank_line(r: RankRate) -> str:
    """``rank 1: step 80, 4.2 steps/s, 540 samples/s, forward 47.1 ms``."""
    if r.step is None:
        return f"rank {r.rank}: no step reported yet"
    parts = [f"rank {r.rank}: step {r.step}"]
    if r.steps_per_s is not None:
        parts.append(f"{r.steps_per_s:.3g} steps/s")
    if (rate := r.metrics.get("samples_per_s")) is not None:
        parts.append(f"{rate:,.0f} samples/s")
    if (fwd := r.metrics.get("fwd_ms")) is not None:
        parts.append(f"forward {fwd:.1f} ms")
    return ", ".join(parts)


def _slurm_job(run: Run) -> str | None:
    """``slurm job 4102 (attempt 2)`` for a Slurm run that was submitted; else None."""
    if (run.spec or {}).get("launcher") != "slurm":
        return None
    try:
        saved = json.loads((Path(run.run_dir) / STATE_FILE).read_text(encoding="utf-8"))
        job, attempt = str(saved["job_id"]), int(saved.get("attempt", 1))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"slurm job {clip(job, 32)}" + (f" (attempt {attempt})" if attempt > 1 else "")


def cmd_status(args: argparse.Namespace) -> int:
    with store_for(args) as store:
        if args.run:
            run = _find(store, args.run)
            ranks = _ranks(run)
            if args.json:
                extra = {"ranks": [asdict(r) for r in ranks]} if ranks else {}
                emit_json({**run.model_dump(), **extra})
                return EXIT_OK
            print(_run_line(run))
            print(
                f"  created {fmt_time(run.created_at)}  started {fmt_time(run.started_at)}"
                f"  ended {fmt_time(run.ended_at)}"
            )
            print(f"  run dir {run.run_dir}")
            if (job := _slurm_job(run)) is not None:
                print(f"  {job}")
            for rank in ranks:
                print(f"  {_rank_line(rank)}")
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
            emit_json([r.model_dump() for r in runs])
            return EXIT_OK
        if not runs:
            print("no active runs")
        for run in runs:
            print(_run_line(run))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        runs = list_runs(session=s, limit=args.limit)
    if args.json:
        emit_json([r.model_dump() for r in runs])
        return EXIT_OK
    if not runs:
        print("no runs yet")
    for run in runs:
        print(_run_line(run))
    return EXIT_OK


# -- abort ----------------------------------------------------------------------------------


def cmd_abort(args: argparse.Namespace) -> int:
    reason = args.reason or "requested at the terminal"
    with store_for(args) as store:
        run = _find(store, args.run)
        if run.status in TERMINAL:
            raise ConflictError(f"run {run.id} is already {run.status}; nothing to abort")
        if not supervisor_alive(run.supervisor_pid, run.supervisor_create_time):
            done = abort_unsupervised(store, run.id, reason)
            print(f"{run.id}: {done.summary if done else 'aborted'}")
            return EXIT_OK
        with store.write() as s:
            request_abort(session=s, run_id=run.id, reason=reason, by="terminal")
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


def _log_paths(run: Run, args: argparse.Namespace) -> list[Path]:
    """The files ``harness logs`` shows: the run's own, or one rank's, one per attempt."""
    stream = "stderr" if args.stderr else "stdout"
    run_dir = Path(run.run_dir)
    launcher = (run.spec or {}).get("launcher", "local")
    if args.script:
        if launcher != "slurm":
            raise NotFoundError(
                f"run {run.id} was launched by {launcher!r}: it has no batch script"
            )
        if not (run_dir / SCRIPT_FILE).is_file():
            raise NotFoundError(f"run {run.id} has no batch script (it was never submitted)")
        return [run_dir / SCRIPT_FILE]
    if args.rank is None:
        return [run_dir / (STDERR_FILE if args.stderr else STDOUT_FILE)]
    if args.rank < 0:
        raise UsageError(f"--rank must be >= 0, got {args.rank}")
    if launcher != "torchrun":
        raise NotFoundError(
            f"run {run.id} was launched by {launcher!r}: it has no per-rank logs (drop --rank)"
        )
    paths = rank_logs(run_dir, args.rank, stream)
    if not paths:
        nproc = ((run.spec or {}).get("torchrun") or {}).get("nproc_per_node")
        known = f" (ranks 0-{nproc - 1})" if isinstance(nproc, int) and nproc > 0 else ""
        raise NotFoundError(f"run {run.id} has no {stream} log for rank {args.rank} yet{known}")
    return paths


def _copy_out(f: BinaryIO) -> None:
    while chunk := f.read(65536):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    """A run's output; with ``--rank`` one rank's, every attempt in order (torchrun
    restarts the group into a new attempt); ``--follow`` moves on to a new attempt."""
    with store_for(args) as store:
        run = _find(store, args.run)
        shown = 0
        paths = _log_paths(run, args)
        while True:
            path = paths[shown]
            if len(paths) > 1 or shown:
                print(f"== {path.parent.parent.name} ==", file=sys.stderr, flush=True)
            try:
                f = path.open("rb")
            except OSError as exc:
                raise HarnessError(f"cannot read {path}: {exc.strerror}") from None
            with f:
                while True:
                    _copy_out(f)
                    if shown < len(paths) - 1:
                        break  # an earlier attempt: whole, then the next one
                    if not args.follow:
                        return EXIT_OK
                    with store.read() as s:
                        row = s.get(Run, run.id)
                    done = row is None or row.status in TERMINAL
                    if args.rank is not None:
                        paths = _log_paths(run, args)  # a restart adds an attempt
                    if shown < len(paths) - 1:
                        _copy_out(f)
                        break
                    if done:
                        _copy_out(f)
                        return EXIT_OK
                    time.sleep(0.3)
            shown += 1


# -- controls -------------------------------------------------------------------------------


def _parse_changes(items: list[str]) -> dict[str, Any]:
    """``lr=0.0005 data_weights={echo=1}`` -> values; known controls checked by their rules."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        try:
            value = toml_value(raw.strip())
        except RecursionError:
            raise UsageError(f"{key}: nested too deeply to read") from None
        if problem := control_problem(value):
            raise UsageError(f"{key}: {problem}")
        changes[key] = check_control(key, value) if key in CONTROL_RULES else value
    return changes


def cmd_controls_set(args: argparse.Namespace) -> int:
    """Merge changes into the run's controls.json; the job applies them and reports back."""
    changes = _parse_changes(args.changes)
    with store_for(args) as store:
        run = _find(store, args.run)
    if run.status in TERMINAL:
        raise ConflictError(f"run {run.id} is already {run.status}; its controls no longer matter")
    merged = update_controls(run.run_dir, changes)
    unknown = [k for k in changes if k not in CONTROL_RULES]
    if unknown:
        print(
            f"note: {', '.join(unknown)} not among the controls harness knows "
            f"({', '.join(CONTROL_RULES)}); your job decides what to do with them",
            file=sys.stderr,
        )
    if args.json:
        emit_json({"id": run.id, "controls": merged})
        return EXIT_OK
    shown = ", ".join(f"{k}={merged[k]!r}" for k in changes)
    print(f"{run.id}: controls set: {shown} (the job reports what it applied in its metrics)")
    return EXIT_OK


def cmd_controls_show(args: argparse.Namespace) -> int:
    from harness._atomic import read_json

    with store_for(args) as store:
        run = _find(store, args.run)
    path = Path(run.run_dir) / CONTROLS_FILE
    try:
        controls = read_json(path)
    except FileNotFoundError:
        controls = {}
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: cannot read ({exc})") from None
    if args.json:
        emit_json({"id": run.id, "controls": controls})
        return EXIT_OK
    if not controls:
        print(f"{run.id}: no controls set")
    for key, value in sorted(controls.items()):
        print(f"{key} = {value!r}")
    return EXIT_OK
