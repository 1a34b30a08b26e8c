"""The ``local`` launcher: the job as a process tree on this machine.

The root process is the job wrapper (``harness.runtime.wrap``), which runs the command
and writes its exit status to ``exit.json``, so a supervisor that restarts can still
learn how a re-adopted job ended. The wrapper is started with ``python -P``: a
``harness/`` folder in the user's working directory never stands in for ours.

Where cgroup v2 is writable, each run gets its own cgroup (``harness.runtime.cgroups``):
it is made and noted in ``<run dir>/cgroup`` before the spawn, the wrapper enters it
before it runs anything, so everything the job starts is in it, and it is removed
once the run is over and it is empty (leftovers keep it for the stale sweep). Else
(or with ``LocalLauncher(use_cgroups=False)``) the job is tracked by its session and
by the descendants ``processes()`` records in ``<run dir>/descendants.jsonl``; see
``harness.runtime.procs`` for what each finds and what it cannot.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.job.protocol import EXIT_FILE, STDERR_FILE, STDOUT_FILE
from harness.runtime import cgroups, procs
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
    cgroup: Path | None = None  # the run's own cgroup; None: tracked by session and ledger
    ledger: procs.Ledger = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ledger = procs.Ledger(self.run_dir / procs.LEDGER_FILE)

    @property
    def tracking(self) -> procs.Tracking:
        return procs.Tracking(cgroup=self.cgroup, ledger=self.run_dir / procs.LEDGER_FILE)

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
            self._release()
            return True, code if recorded is None else recorded
        if procs.is_ours(self.record):
            return False, None
        self._release()
        return True, read_exit(self.run_dir)

    def processes(self) -> list[psutil.Process]:
        """The job's processes (``procs.tracked``); each new one is noted in the ledger."""
        found = procs.tracked(self.record, self.tracking, ledger=self.ledger)
        self.ledger.note(found)
        return found

    def terminate(self, *, int_grace: float, term_grace: float) -> procs.Escalation:
        """The escalation over everything tracked; the cgroup is killed and removed."""
        return procs.terminate_tree(
            self.record,
            int_grace=int_grace,
            term_grace=term_grace,
            popen=self.popen,
            tracking=self.tracking,
        )

    def scheduler(self) -> None:
        return None  # no scheduler: the process is the job

    def nodes(self) -> None:
        return None  # sampled here, through processes()

    def _release(self) -> None:
        """The job ended: its cgroup goes if empty (what it left behind waits for the sweep)."""
        if self.cgroup is not None and not cgroups.members(self.cgroup):
            cgroups.remove(self.cgroup)


class LocalLauncher:
    """Starts jobs here; ``use_cgroups=False`` forces the session-and-ledger tracking."""

    name = "local"
    remote = False

    def __init__(self, *, use_cgroups: bool = True, cgroup_base: Path | None = None) -> None:
        self.use_cgroups = use_cgroups
        self.cgroup_base = cgroup_base  # None: below our own cgroup (cgroups.base_dir)

    def start(
        self,
        argv: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
    ) -> LocalJob:
        cgroup = self._cgroup(run_id, run_dir)
        command = wrapper_argv(argv, run_dir)
        try:
            popen, record = procs.spawn(
                command if cgroup is None else cgroups.enter_argv(cgroup, command),
                run_id=run_id,
                cwd=cwd,
                env=env,
                stdout_path=run_dir / STDOUT_FILE,
                stderr_path=run_dir / STDERR_FILE,
            )
        except BaseException:
            if cgroup is not None:
                _drop_cgroup(cgroup, run_dir)
            raise
        # The wrapper put itself in already; this says whether the kernel let it. A job that
        # is already over may have left processes in the cgroup: keep it for the sweep.
        refused = cgroup is not None and not cgroups.move(cgroup, popen.pid)
        if cgroup is not None and refused and popen.poll() is None and not cgroups.members(cgroup):
            _drop_cgroup(cgroup, run_dir)
            cgroup = None
        return LocalJob(record, run_dir, popen, cgroup)

    def adopt(self, record: procs.ProcRecord, run_dir: Path) -> LocalJob:
        return LocalJob(record, run_dir, cgroup=cgroups.read_record(run_dir, record.run_id))

    def alive(self, record: procs.ProcRecord, run_dir: Path) -> bool:
        return procs.is_ours(record)

    def _cgroup(self, run_id: str, run_dir: Path) -> Path | None:
        """The run's new cgroup, noted in the run dir; None where there can be none."""
        if not self.use_cgroups:
            return None
        cgroup = cgroups.create(run_id, self.cgroup_base)
        if cgroup is not None and not cgroups.write_record(run_dir, cgroup):
            _drop_cgroup(cgroup, run_dir)
            return None
        return cgroup


def _drop_cgroup(cgroup: Path, run_dir: Path) -> None:
    cgroups.remove(cgroup)
    with contextlib.suppress(OSError):
        (run_dir / cgroups.RECORD_FILE).unlink()
