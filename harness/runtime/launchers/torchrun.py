"""The ``torchrun`` launcher: one job of ``nproc_per_node`` ranks on this machine.

The spec's command is written as for ``local`` (``["{python}", "-m", "model.train", ...]``);
this launcher runs it as ``python -m torch.distributed.run --standalone --nproc-per-node N
... -m model.train ...`` under the same job wrapper, which stays the root and keeps the
exit status in ``exit.json``. Everything else (the cgroup, the session and descendants
ledger, re-adoption) is the ``local`` launcher's: torchrun's agent is the wrapper's child
and the ranks are the agent's children.

What torchrun does, read in ``torch/distributed/elastic`` (torch 2.13) and checked here:

- Each rank is started with ``Popen(start_new_session=True)``: every worker is the leader of
  its own session and process group, so the job's session alone would not find them. They
  inherit the agent's environment (the run marker) and stay its children, so the tree and
  the marker find them, and the cgroup where there is one.
- On SIGINT, SIGTERM, SIGHUP or SIGQUIT the agent raises ``SignalException``, sends *the
  same signal* to each rank's process group (``os.killpg``), waits up to 30 s for them,
  SIGKILLs what is left, and exits 1. So the graceful step of the escalation sends SIGINT
  to the agent only, and torchrun forwards it: each rank gets exactly one SIGINT (signalling
  the ranks directly as well would give them two, and a second Ctrl-C means "die now" to
  most training loops, ours included). SIGTERM and SIGKILL then go to every process.
- When a rank exits non-zero or is killed, the agent SIGTERMs the other ranks and, with
  ``max_restarts`` left, restarts the whole group (a new ``attempt_<n>`` log directory),
  else exits 1 after printing a "Root Cause (first observed failure)" report on stderr.
  This handle reads that report once the job has ended and appends one line to
  ``stderr.log`` naming the rank, how it ended and the restarts used, so the incident says
  which rank failed instead of ending on a line of ``=``.
- A rank hung in a collective hangs every rank (they wait for it); no metrics come, so the
  stall rule aborts the run and the escalation reaches every rank (SIGTERM, then SIGKILL
  for a rank that is stopped or ignores signals).
- With more than one rank and no ``OMP_NUM_THREADS`` set, torchrun sets it to 1.

Per-rank output: ``--log-dir <run dir>/ranks --tee 3`` keeps each rank's stdout and stderr
in ``ranks/<rendezvous id>_<random>/attempt_<n>/<local rank>/{stdout,stderr}.log`` and
copies them, each line prefixed ``[default<local rank>]:``, to the run's ``stdout.log``
and ``stderr.log``.
:func:`rank_logs` finds them (``harness logs RUN --rank R``).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.core.format import exit_status
from harness.core.spec import TorchrunConfig
from harness.errors import SpawnError, SpecError
from harness.job.protocol import STDERR_FILE
from harness.runtime import procs
from harness.runtime.launchers.local import LocalJob, LocalLauncher
from harness.runtime.tail import read_tail

__all__ = [
    "RANK_LOG_DIR",
    "RankFailure",
    "TorchrunJob",
    "TorchrunLauncher",
    "describe_failure",
    "first_failure",
    "parse_report",
    "rank_logs",
    "torchrun_argv",
]

RANK_LOG_DIR = "ranks"  # in the run dir: torchrun's --log-dir
NOTE_PREFIX = "harness: torchrun: "
_STDERR_TAIL = 64 * 1024  # torchrun's failure report sits at the end of its stderr

# Interpreter options torchrun cannot pass on (it starts each rank as ``python -u``):
# each becomes the environment variable that means the same, for the agent and the ranks.
_PY_FLAG_ENV = {"P": "PYTHONSAFEPATH", "B": "PYTHONDONTWRITEBYTECODE", "O": "PYTHONOPTIMIZE"}
_PYTHON_RE = re.compile(r"python(\d+(\.\d+)*)?$")


def _is_python(program: str) -> bool:
    return program == sys.executable or bool(_PYTHON_RE.fullmatch(os.path.basename(program)))


def _python_entry(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """What follows ``python [options]`` in ``argv``, as torchrun takes it, and the env.

    ``python -P -m pkg.mod a b`` -> (``["-m", "pkg.mod", "a", "b"]``, PYTHONSAFEPATH=1).
    """
    env: dict[str, str] = {}
    words = list(argv[1:])
    while words and words[0].startswith("-") and words[0] not in ("-m", "-c", "-", "--"):
        word = words.pop(0)
        letters = word[1:]
        if not letters or not all(c in "PBOu" for c in letters):
            raise SpecError(
                f"command: the interpreter option {word!r} cannot reach the ranks: torchrun "
                "starts each one as 'python -u SCRIPT' (use the PYTHON* environment "
                "variable that means the same, in the spec's env)"
            )
        for c in letters:
            if c in _PY_FLAG_ENV:
                env[_PY_FLAG_ENV[c]] = "1"
    if words[:1] == ["--"]:
        words.pop(0)
    if not words:
        raise SpecError("command: torchrun needs a script or '-m module' after the interpreter")
    if words[0] in ("-c", "-"):
        raise SpecError(
            f"command: torchrun runs a script or a module, not 'python {words[0]}': put the "
            "code in a file"
        )
    if words[0] == "-m" and len(words) < 2:
        raise SpecError("command: '-m' needs a module name")
    return words, env


def torchrun_argv(
    argv: Sequence[str], cfg: TorchrunConfig, run_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line for the spec's ``argv``, and environment to add.

    A Python command (``python [options] -m module ...`` or ``python script ...``) keeps its
    interpreter, which torchrun then uses for every rank; any other program runs through
    ``--no-python`` with this interpreter as the agent. Raises SpecError for a command
    torchrun cannot run as written (``python -c``, an option it cannot pass on).
    """
    if not argv:
        raise SpecError("command: empty")
    options = ["--standalone"] if cfg.standalone else []
    options += [
        "--nproc-per-node",
        str(cfg.nproc_per_node),
        "--max-restarts",
        str(cfg.max_restarts),
        "--monitor-interval",
        f"{cfg.monitor_interval_s:g}",
        "--log-dir",
        str(run_dir / RANK_LOG_DIR),
        "--tee",
        "3",
    ]
    if _is_python(argv[0]):
        entry, env = _python_entry(argv)
        # -P for the agent too: a torch/ folder in the working directory never stands in.
        return [argv[0], "-P", "-m", "torch.distributed.run", *options, *entry], env
    agent = [sys.executable, "-P", "-m", "torch.distributed.run"]
    return [*agent, *options, "--no-python", *argv], {}


# -- what torchrun says about a failed rank ------------------------------------------------


@dataclass(frozen=True)
class RankFailure:
    """One failed rank, from torchrun's failure report."""

    rank: int
    local_rank: int
    exitcode: int
    pid: int | None
    time: str  # as torchrun prints it, to the second
    message: str  # the entry's last traceback line ("" when it has none worth showing)

    @property
    def how(self) -> str:
        return exit_status(self.exitcode)

    @property
    def signalled(self) -> bool:
        """Killed by a signal torchrun does not send itself (it stops ranks with SIGTERM)."""
        return self.exitcode < 0 and -self.exitcode != signal.SIGTERM


_REPORT = re.compile(
    r"Failures:\n(?P<others>.*?)\n-{8,}\nRoot Cause \(first observed failure\):\n"
    r"(?P<root>.*?)\n={8,}",
    re.S,
)
_ENTRY = re.compile(r"^\[\d+\]:$", re.M)
_FIELD = re.compile(r"^  (\w+)\s*: ?(.*)$")


def _entry(text: str) -> RankFailure | None:
    fields: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        m = _FIELD.match(line) if key != "traceback" else None
        if m is not None:
            key = m[1]
            fields[key] = [m[2]]
        elif key:
            fields[key].append(line)  # a traceback runs over several lines, to the end
    rank = re.match(r"(\d+) \(local_rank: (\d+)\)", " ".join(fields.get("rank", [])))
    code = re.match(r"(-?\d+) \(pid: (\d+)\)", " ".join(fields.get("exitcode", [])))
    if rank is None or code is None:
        return None
    trace = [ln.strip() for ln in fields.get("traceback", []) if ln.strip()]
    message = trace[-1] if trace and not trace[-1].startswith(_NO_MESSAGE) else ""
    return RankFailure(
        rank=int(rank[1]),
        local_rank=int(rank[2]),
        exitcode=int(code[1]),
        pid=int(code[2]),
        time=" ".join(fields.get("time", [])).strip(),
        message=message[:300],
    )


_NO_MESSAGE = ("To enable traceback", "Signal ", "<N/A>")


def parse_report(text: str) -> list[RankFailure]:
    """The failed ranks in torchrun's last failure report: its root cause first; [] if none."""
    found = list(_REPORT.finditer(text))
    if not found:
        return []
    report = found[-1]
    entries = [report["root"], *_ENTRY.split(report["others"])]
    failures = [f for f in (_entry(e) for e in entries if e.strip()) if f is not None]
    return failures if failures and report["root"].strip() else []


def first_failure(failures: Sequence[RankFailure]) -> RankFailure | None:
    """The failure that most likely caused the others.

    torchrun's "first observed" is the earliest timestamp, to the second, ties broken by
    rank: a rank SIGKILLed and the rank whose collective then broke often fail in the
    same second. A rank killed by a signal (other than torchrun's own SIGTERM) in the
    root cause's second is taken as the cause instead.
    """
    if not failures:
        return None
    root = failures[0]
    if root.signalled:
        return root
    same = [f for f in failures[1:] if f.time == root.time and f.signalled]
    return same[0] if same else root


def rank_logs(run_dir: Path, rank: int, stream: str = "stdout") -> list[Path]:
    """A local rank's log files (``stream`` is stdout or stderr), one per attempt, in order."""
    base = run_dir / RANK_LOG_DIR
    found = []
    for path in base.glob(f"*/attempt_*/{rank}/{stream}.log"):
        try:
            attempt = int(path.parent.parent.name.removeprefix("attempt_"))
        except ValueError:
            continue
        found.append((attempt, path))
    return [p for _, p in sorted(found)]


def _attempts(run_dir: Path) -> int:
    """How many times torchrun started the worker group (restarts + 1); 0 if unknown."""
    return len({p.name for p in (run_dir / RANK_LOG_DIR).glob("*/attempt_*") if p.is_dir()})


def describe_failure(run_dir: Path, stderr: str, max_restarts: int | None = None) -> str | None:
    """One line on how a torchrun job failed, from its report; None when it has none.

    ``rank 1 failed first (local rank 1, pid 4242): killed by SIGKILL; then rank 0:
    killed by SIGTERM; 1 restart of the group used (max_restarts 1)`` (torchrun stops the
    other ranks with SIGTERM). A rank that exited with an error and left no traceback in
    the report is described by the last line of its own stderr log.
    """
    failures = parse_report(stderr)
    failure = first_failure(failures)
    if failure is None:
        return None
    message = failure.message
    if not message and failure.exitcode > 0:
        logs = rank_logs(run_dir, failure.local_rank, "stderr")
        if logs:
            lines = read_tail(logs[-1], 4096).strip().splitlines()
            message = lines[-1].strip()[:300] if lines else ""
    pid = f", pid {failure.pid}" if failure.pid else ""
    text = (
        f"rank {failure.rank} failed first (local rank {failure.local_rank}{pid}): {failure.how}"
        + (f": {message}" if message else "")
    )
    others = [f for f in failures if f is not failure]
    if others:
        text += "; then " + ", ".join(f"rank {f.rank}: {f.how}" for f in others)
    restarts = _attempts(run_dir) - 1
    if restarts > 0 or max_restarts:
        used = f"{restarts} restart{'s' * (restarts != 1)} of the group used"
        limit = f" (max_restarts {max_restarts})" if max_restarts is not None else ""
        text += f"; {used}{limit}"
    return text


def _append_note(path: Path, line: str) -> None:
    """Append one line to the job's stderr file when it is a regular file; else nothing."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the handle and the launcher -----------------------------------------------------------


@dataclass
class TorchrunJob:
    """A torchrun job: the ``local`` handle of its wrapper, with torchrun's own shutdown."""

    local: LocalJob
    max_restarts: int | None = None
    _noted: bool = field(default=False, init=False)

    @property
    def record(self) -> procs.ProcRecord:
        return self.local.record

    @property
    def run_dir(self) -> Path:
        return self.local.run_dir

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        return self.local.popen

    def poll(self) -> tuple[bool, int | None]:
        """As ``local``; a failed job's stderr then ends with which rank failed, and how."""
        exited, code = self.local.poll()
        if exited and code not in (0, None) and not self._noted:
            self._noted = True
            stderr = self.run_dir / STDERR_FILE
            report = read_tail(stderr, _STDERR_TAIL)
            note = describe_failure(self.run_dir, report, self.max_restarts)
            if note is not None:
                _append_note(stderr, f"{NOTE_PREFIX}{note}\n")
        return exited, code

    def processes(self) -> list[psutil.Process]:
        return self.local.processes()

    def scheduler(self) -> None:
        return None

    def nodes(self) -> None:
        return None

    def agents(self, live: Sequence[psutil.Process]) -> Sequence[psutil.Process]:
        """Who gets the graceful SIGINT: torchrun's agent (the wrapper's child), which
        forwards it to every rank's process group. Everyone, when no agent is left."""
        root = procs.same_process(self.record.pid, self.record.create_time)
        try:
            children = {p.pid for p in root.children()} if root is not None else set()
        except psutil.Error:
            children = set()
        chosen = [p for p in live if p.pid in children]
        return chosen or live

    def terminate(self, *, int_grace: float, term_grace: float) -> procs.Escalation:
        """SIGINT to the agent (torchrun forwards it), wait; SIGTERM, SIGKILL to all; sweep."""
        return procs.terminate_tree(
            self.record,
            int_grace=int_grace,
            term_grace=term_grace,
            popen=self.local.popen,
            tracking=self.local.tracking,
            int_to=self.agents,
        )


class TorchrunLauncher:
    """Starts a spec's command under torchrun; the process tree is the ``local`` launcher's."""

    name = "torchrun"
    remote = False

    def __init__(
        self,
        config: TorchrunConfig | None = None,
        *,
        use_cgroups: bool = True,
        cgroup_base: Path | None = None,
    ) -> None:
        self.config = config or TorchrunConfig()
        self._local = LocalLauncher(use_cgroups=use_cgroups, cgroup_base=cgroup_base)

    def start(
        self,
        argv: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
    ) -> TorchrunJob:
        try:
            command, extra = torchrun_argv(argv, self.config, run_dir)
        except SpecError as exc:  # the command as written cannot run under torchrun
            raise SpawnError(f"cannot start job under torchrun: {exc}") from None
        env = {**env, **extra}
        job = self._local.start(command, run_id=run_id, run_dir=run_dir, cwd=cwd, env=env)
        return TorchrunJob(job, self.config.max_restarts)

    def adopt(self, record: procs.ProcRecord, run_dir: Path) -> TorchrunJob:
        return TorchrunJob(self._local.adopt(record, run_dir), self.config.max_restarts)

    def alive(self, record: procs.ProcRecord, run_dir: Path) -> bool:
        return procs.is_ours(record)
