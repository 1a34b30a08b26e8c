"""Launchers: how a job's processes are started, watched and stopped.

One module per launcher behind one small interface, so the supervisor never knows
which one it drives. A :class:`Launcher` starts a command (or re-adopts one a dead
supervisor left running) and returns a :class:`JobHandle`; the handle says whether the
job has exited and with what status, which processes are the job's (what the probes
sample), and stops them by escalation. ``local`` is a process tree on this machine;
``torchrun`` and ``slurm`` come next (DESIGN section 11) and register here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import psutil

from harness.errors import SpecError
from harness.runtime.procs import Escalation, ProcRecord

__all__ = ["JobHandle", "Launcher", "launcher_for"]


class JobHandle(Protocol):
    """One launched job, as the supervisor sees it; every method may block briefly."""

    @property
    def record(self) -> ProcRecord:
        """The root process: stored on the run so a later supervisor can re-adopt it."""
        ...

    def poll(self) -> tuple[bool, int | None]:
        """(exited, the command's exit status); the status is None when it was not kept."""
        ...

    def processes(self) -> list[psutil.Process]:
        """The job's live processes now, for the CPU and GPU probes."""
        ...

    def terminate(self, *, int_grace: float, term_grace: float) -> Escalation:
        """SIGINT, wait, SIGTERM, wait, SIGKILL over every process of the job."""
        ...


class Launcher(Protocol):
    name: str

    def start(
        self,
        argv: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
    ) -> JobHandle:
        """Start ``argv``; raises ``harness.errors.SpawnError`` with one line when it cannot."""
        ...

    def adopt(self, record: ProcRecord, run_dir: Path) -> JobHandle:
        """A handle on a job started by another (dead) supervisor."""
        ...


def launcher_for(name: str) -> Launcher:
    """The launcher a spec names; SpecError for one this version does not have."""
    if name == "local":
        from harness.runtime.launchers.local import LocalLauncher

        return LocalLauncher()
    raise SpecError(f"launcher: {name!r} is not available in this version (use 'local')")
