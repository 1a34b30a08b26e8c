"""The ``local`` launcher: the job as a process tree on this machine.

The root process is the job wrapper (``harness.runtime.wrap``), which runs the command
and writes its exit status to ``exit.json``, so a supervisor that restarts can still
learn how a re-adopted job ended. The wrapper is started with ``python -P``: a
``harness/`` folder in the user's working directory never stands in for ours.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.job.protocol import EXIT_FILE, STDERR_FILE, STDOUT_FILE
from harness.runtime import procs
from harness.runtime.probes import process_tree
from harness.runtime.wrap import read_exit

__all__ = ["LocalJob", "LocalLauncher", "wrapper_argv"]


def wrapper_argv(argv: Sequence[str], run_dir: Path) -> list[str]:
    """``argv`` run under the job wrapper, which keeps its exit status in the run dir."""
    wrap = [sys.executable, "-P", "-m", "harness.runtime.wrap"]
    return [*wrap, str(run_dir / EXIT_FILE), "--", *argv]


@dataclass
class LocalJob:
    record: procs.ProcRecord
    run_dir: Path
    popen: subprocess.Popen[bytes] | None = None  # None for a re-adopted job

    def poll(self) -> tuple[bool, int | None]:
        """(exited, code). The code is the command's, from its wrapper's exit file.

        Our own child is also waited for, and its status is the fallback when the wrapper
        could not write the file. The file comes first because the wrapper cannot die of
        the command's signal: a command killed by SIGKILL is -9 there but 137 as the
        wrapper's status, and an adopted job has only the file.
        """
        if self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return False, None
            recorded = read_exit(self.run_dir)
            return True, code if recorded is None else recorded
        if procs.is_ours(self.record):
            return False, None
        return True, read_exit(self.run_dir)

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.record.pid)

    def terminate(self, *, int_grace: float, term_grace: float) -> procs.Escalation:
        return procs.terminate_tree(
            self.record, int_grace=int_grace, term_grace=term_grace, popen=self.popen
        )


class LocalLauncher:
    name = "local"

    def start(
        self,
        argv: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
    ) -> LocalJob:
        popen, record = procs.spawn(
            wrapper_argv(argv, run_dir),
            run_id=run_id,
            cwd=cwd,
            env=env,
            stdout_path=run_dir / STDOUT_FILE,
            stderr_path=run_dir / STDERR_FILE,
        )
        return LocalJob(record, run_dir, popen)

    def adopt(self, record: procs.ProcRecord, run_dir: Path) -> LocalJob:
        return LocalJob(record, run_dir)
