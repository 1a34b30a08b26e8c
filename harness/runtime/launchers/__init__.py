"""Launchers: how a job's processes are started, watched and stopped.

One module per launcher behind one small interface, so the supervisor never knows
which one it drives. A :class:`Launcher` starts a command (or re-adopts one a dead
supervisor left running) and returns a :class:`JobHandle`; the handle says whether the
job has exited and with what status, which processes are the job's (what the probes
sample), and stops them by escalation. ``local`` is a process tree on this machine;
``torchrun`` is the same tree with torchrun's agent and its ranks in it (its graceful
step goes through the agent); ``slurm`` is a batch job on a cluster, whose processes are
on other machines: its handle says what the scheduler says (:meth:`JobHandle.scheduler`,
queue time included) and where its node agents' samples are (:meth:`JobHandle.nodes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from harness.errors import SpecError
from harness.runtime.procs import Escalation, ProcRecord

if TYPE_CHECKING:
    from harness.core.spec import RunSpec, SlurmConfig, TorchrunConfig
    from harness.runtime.launchers.slurm import SchedulerView
    from harness.runtime.probes import NodeProbe

__all__ = ["JobHandle", "Launcher", "launcher_for", "launcher_of"]


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

    def scheduler(self) -> SchedulerView | None:
        """A scheduler's state of the job (queued, running, how it ended); None: no scheduler."""
        ...

    def nodes(self) -> NodeProbe | None:
        """Where the node agents' samples are, for a job on other machines; None: local."""
        ...


class Launcher(Protocol):
    name: str
    remote: bool  # the job runs elsewhere: its record is not a local process

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

    def alive(self, record: ProcRecord, run_dir: Path) -> bool:
        """Whether the job a dead supervisor left is still there to re-adopt."""
        ...


def launcher_for(
    name: str,
    *,
    torchrun: TorchrunConfig | None = None,
    slurm: SlurmConfig | None = None,
    resume: Sequence[str] = (),
) -> Launcher:
    """The launcher a spec names; SpecError for one this version does not have.

    ``torchrun`` and ``slurm`` are the spec's tables (their defaults when not given);
    ``resume`` its resume words (a Slurm resubmission resumes with them).
    """
    if name == "local":
        from harness.runtime.launchers.local import LocalLauncher

        return LocalLauncher()
    if name == "torchrun":
        from harness.runtime.launchers.torchrun import TorchrunLauncher

        return TorchrunLauncher(torchrun)
    if name == "slurm":
        from harness.runtime.launchers.slurm import SlurmLauncher

        return SlurmLauncher(slurm, resume=resume)
    raise SpecError(
        f"launcher: {name!r} is not available in this version (use 'local', 'torchrun' or 'slurm')"
    )


def launcher_of(spec: RunSpec) -> Launcher:
    """The launcher a spec names, with its tables."""
    return launcher_for(spec.launcher, torchrun=spec.torchrun, slurm=spec.slurm, resume=spec.resume)
