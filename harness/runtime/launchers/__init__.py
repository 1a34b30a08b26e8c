"""Launchers: how a job's processes are started, watched and stopped.

One module per launcher behind one small interface, so the supervisor never knows
which one it drives. A :class:`Launcher` starts a command (or re-adopts one a dead
supervisor left running) and returns a :class:`JobHandle`; the handle says whether the
job has exited and with what status, which processes are the job's (what the probes
sample), and stops them by escalation. ``local`` is a process tree on this machine;
``torchrun`` is the same tree with torchrun's agent and its ranks in it (its graceful
step goes through the agent); ``slurm`` comes next (DESIGN section 11) and registers here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from harness.errors import SpecError
from harness.runtime.procs import Escalation, ProcRecord

if TYPE_CHECKING:
    from harness.core.spec import TorchrunConfig

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


def launcher_for(name: str, *, torchrun: TorchrunConfig | None = None) -> Launcher:
    """The launcher a spec names; SpecError for one this version does not have.

    ``torchrun`` is the spec's ``[torchrun]`` table (its defaults when not given).
    """
    if name == "local":
        from harness.runtime.launchers.local import LocalLauncher

        return LocalLauncher()
    if name == "torchrun":
        from harness.runtime.launchers.torchrun import TorchrunLauncher

        return TorchrunLauncher(torchrun)
    raise SpecError(
        f"launcher: {name!r} is not available in this version (use 'local' or 'torchrun')"
    )
