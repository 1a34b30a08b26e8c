"""The root process of every job: runs the command and keeps its exit status on disk.

``python -m harness.runtime.wrap EXIT_FILE -- COMMAND...``

The supervisor may die and be restarted while a job runs; a new supervisor cannot
``wait()`` for a process that is not its child, so without this the exit status of a
re-adopted job would be lost. The wrapper starts the command, outlives any SIGINT or
SIGTERM aimed at the job (the supervisor signals the whole tree, so the command gets them
too), waits for it and writes ``{"code": N, "t": ...}`` atomically to EXIT_FILE. It
exits with the command's status. Stdlib only, and tiny: it adds one idle process.
:func:`read_exit` is how the supervisor side reads the file back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.job.protocol import EXIT_FILE


def read_exit(run_dir: Path) -> int | None:
    """The command's exit status as the wrapper wrote it (negative: killed by a signal)."""
    try:
        return int(json.loads((run_dir / EXIT_FILE).read_text(encoding="utf-8"))["code"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_exit(path: str, code: int) -> None:
    """Keep the status; when the run dir is gone (the job removed it) say so and go on."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"code": code, "t": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # our exit status (the command's) still tells the supervisor
        print(f"harness: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m harness.runtime.wrap EXIT_FILE -- COMMAND...", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"harness: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        write_exit(exit_file, 127)
        return 127
    # Installed after the child started, so the child keeps the default dispositions.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
    write_exit(exit_file, code)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
