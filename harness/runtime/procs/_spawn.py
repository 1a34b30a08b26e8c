"""Starting a job: its own session, the run marker, output appended to the run's files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from harness.errors import SpawnError
from harness.runtime.procs._identity import MARKER_ENV, ProcRecord


def spawn(
    argv: Sequence[str],
    *,
    run_id: str,
    cwd: Path,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start ``argv`` in a new session with the run marker; output is appended to the files.

    ``env`` is the job's whole environment; ``MARKER_ENV`` is added to it. The executable is
    looked up on the ``PATH`` of ``env``.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    if not argv:
        raise SpawnError("cannot start job: empty command")
    full_env = {**env, MARKER_ENV: run_id}
    try:
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise SpawnError(_start_error(exc, argv[0], cwd)) from None
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # cannot happen for an unreaped child; keep the boundary closed anyway
        proc.kill()
        proc.wait()
        raise SpawnError(f"cannot start job: {argv[0]!r} vanished at start") from None
    return proc, ProcRecord(pid=proc.pid, create_time=create_time, run_id=run_id)


def _start_error(exc: OSError, exe: str, cwd: Path) -> str:
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"cannot start job: working directory {os.fspath(cwd)!r} not found"
    if isinstance(exc, FileNotFoundError):
        where = "" if os.sep in exe else " on PATH"
        return f"cannot start job: {exe!r} not found{where}"
    if isinstance(exc, PermissionError):
        return f"cannot start job: {exe!r} is not executable (permission denied)"
    path = f" ({exc.filename})" if exc.filename is not None else ""
    return f"cannot start job: {exe!r}: {exc.strerror or exc}{path}"
