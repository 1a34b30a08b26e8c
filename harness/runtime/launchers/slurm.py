"""The ``slurm`` launcher: the job submitted to Slurm with ``sbatch``, watched from outside.

Submitting. The launcher writes a batch script (``job.sbatch`` in the run dir, shown by
``harness logs RUN --script``) with the spec's ``[slurm]`` options as ``#SBATCH`` lines,
and submits it with ``sbatch --parsable`` (the run dir's paths go on the command line,
never through a shell). The script proves the run dir is visible from the job's first
node, then runs the command under ``srun``, each task wrapped by the node agent
(:mod:`harness.runtime.nodeagent`), which samples the node into ``probes.<node>.jsonl``
and keeps the exit status in ``exit.json``. The job inherits the environment the
supervisor gives ``sbatch`` (the run marker and the protocol's paths), so the run dir
must be on a filesystem the nodes share (``docs/slurm.md``). Slurm's own requeue is
off (``--no-requeue``): with ``requeue_on`` the harness resubmits instead, from the last
checkpoint event, and counts the attempts in ``slurm.json``.

Watching. The job's state comes from ``scontrol show job -o`` (``sacct`` when the
controller has forgotten the job), asked at most every ``[slurm] poll_s``: PENDING is
queue time (:meth:`SlurmJob.scheduler` says so, and the supervisor judges nothing),
RUNNING starts the clocks, and the end states are the verdicts: COMPLETED and FAILED
carry the command's own exit status, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED and
CANCELLED (by someone else) are incidents of their own (``core.rules.SCHEDULER_ENDS``).

Stopping. ``scancel --signal=INT`` (every task of every step gets SIGINT and may
checkpoint), then, once the command has ended or after ``int_grace``, ``scancel``
(Slurm's SIGTERM to everything, then SIGKILL after its ``KillWait``), then ``scancel
--signal=KILL --full`` after ``term_grace`` for a job that is still not over. A pending
job is simply cancelled. Before the SIGINT the launcher writes ``.abort`` in the run
dir, and the batch script, once ``srun`` returns, waits for the cancel: so a job the
harness stopped is CANCELLED in Slurm's records, not FAILED or COMPLETED by how its
command took SIGINT. Checked on Slurm 22.05: ``--signal=INT --full`` signals the batch
shell and its children only, so ``srun`` prints its status and the tasks never see the
signal; without ``--full`` the tasks get it (``tests/slurm``: the job checkpoints). The
handle's record is the Slurm job id (in the run row's ``pid`` column, with the submit
time as its ``create_time``); a restarted supervisor re-adopts the job by it.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness._atomic import write_json_atomic, write_text_atomic
from harness.core.spec import SlurmConfig
from harness.errors import SpawnError
from harness.job.protocol import METRICS_FILE, STDERR_FILE, STDOUT_FILE
from harness.runtime import procs
from harness.runtime.nodeagent import NODES_DIR, NOT_VISIBLE_EXIT, VISIBLE_FILE
from harness.runtime.probes import NodeProbe
from harness.runtime.specs import with_resume
from harness.runtime.wrap import read_exit

__all__ = [
    "SCRIPT_FILE",
    "STATE_FILE",
    "SchedulerView",
    "SlurmJob",
    "SlurmLauncher",
    "SlurmState",
    "batch_script",
    "last_checkpoint",
    "parse_scontrol",
    "query_job",
]

SCRIPT_FILE = "job.sbatch"
STATE_FILE = "slurm.json"
ABORT_FILE = ".abort"  # written before an abort's SIGINT; the batch script then waits
_ABORT_WAIT_S = 120  # for the harness's scancel, at most (a dead supervisor's job still ends)
_TIMEOUT_S = 30.0  # for each Slurm command
#: states in which the job holds no resources yet: queue time
WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED")
#: states in which it is over (Slurm's base states)
ENDED = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
)


@dataclass(frozen=True)
class SlurmState:
    """What Slurm says of one job now."""

    state: str  # the base state: "PENDING", "RUNNING", "TIMEOUT" ("CANCELLED by 0": CANCELLED)
    reason: str = ""  # "Resources", "JobHeldUser", "None"
    nodes: str = ""
    exit_code: int | None = None  # ExitCode=a:b -> a (the batch script's status)
    signal: int | None = None  # ... -> b (the signal that ended it, 0 for none)
    submit_time: float | None = None  # epoch seconds, by the controller's clock
    start_time: float | None = None
    time_limit: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def waiting(self) -> bool:
        return self.state in WAITING


@dataclass(frozen=True)
class SchedulerView:
    """The scheduler's state of a job as the supervisor shows and judges it."""

    state: str
    reason: str
    waited_s: float  # how long it has waited in the queue (0 once running)
    where: str  # the nodes, once it runs
    detail: str = ""  # for an end the harness explains ("time limit 00:01:00")
    notes: tuple[str, ...] = ()  # what the launcher did on its own since the last view


_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` output (``Key=Value Key=Value ...``) as a dict.

    Values may hold spaces (``Command=``, ``Reason=``): a value runs to the next
    ``Key=``. The first job's line only.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    marks = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        out.setdefault(m.group(1), line[m.end() : end].strip())
    return out


def _epoch(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def _state_of(fields: Mapping[str, str]) -> SlurmState:
    code, sig = _exit_pair(fields.get("ExitCode", ""))
    nodes = fields.get("NodeList", "")
    return SlurmState(
        state=fields.get("JobState", "").split()[0] if fields.get("JobState") else "UNKNOWN",
        reason=fields.get("Reason", ""),
        nodes="" if nodes in ("(null)", "None assigned") else nodes,
        exit_code=code,
        signal=sig,
        submit_time=_epoch(fields.get("SubmitTime", "")),
        start_time=_epoch(fields.get("StartTime", "")),
        time_limit=fields.get("TimeLimit", ""),
    )


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """A Slurm command's (status, stdout, stderr); 127 when it is missing, 124 on timeout."""
    try:
        p = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env=None if env is None else dict(env),
            check=False,
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found (is Slurm's client installed and on PATH?)"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within {_TIMEOUT_S:g} s"
    except OSError as exc:
        return 126, "", f"{argv[0]}: {exc.strerror or exc}"
    return p.returncode, p.stdout, p.stderr


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def query_job(job_id: str) -> SlurmState | None:
    """The job's state from the controller, else from accounting; None when neither knows it.

    Raises ``OSError`` when Slurm cannot be asked at all (no controller answering), so the
    caller can tell "gone" from "cannot tell now".
    """
    code, out, err = _run(["scontrol", "show", "job", "-o", job_id])
    if code == 0 and out.strip():
        return _state_of(parse_scontrol(out))
    if code != 0 and "Invalid job id" not in err:
        raise OSError(f"scontrol: {_first_line(err) or f'exit status {code}'}")
    # the controller no longer knows it (MinJobAge): accounting, where the cluster has it
    code, out, _ = _run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode,Reason,NodeList"]
    )
    if code != 0 or not out.strip():
        return None
    state, exit_text, reason, nodes = ([*out.strip().splitlines()[0].split("|"), "", "", ""])[:4]
    ec, sig = _exit_pair(exit_text)
    return SlurmState(state.split()[0] if state else "UNKNOWN", reason, nodes, ec, sig)


def last_checkpoint(run_dir: Path) -> str | None:
    """The path of the last ``checkpoint`` event in the run's metrics, if any."""
    path: str | None = None
    try:
        with (run_dir / METRICS_FILE).open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"checkpoint"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                is_event = isinstance(rec, dict) and rec.get("event") == "checkpoint"
                if is_event and isinstance(rec.get("path"), str) and rec["path"]:
                    path = rec["path"]
    except OSError:
        return None
    return path


def batch_script(
    argv: Sequence[str], *, run_id: str, run_dir: Path, token: str, cfg: SlurmConfig
) -> str:
    """The batch script: options, the visibility check, ``srun`` of the wrapped tasks."""
    options = [f"--nodes={cfg.nodes}", f"--ntasks-per-node={cfg.ntasks_per_node}"]
    if cfg.cpus_per_task is not None:
        options.append(f"--cpus-per-task={cfg.cpus_per_task}")
    if cfg.gpus_per_node:
        options.append(f"--gpus-per-node={cfg.gpus_per_node}")
    for key in ("partition", "mem", "time", "account", "qos"):
        value = getattr(cfg, key)
        if value is not None:
            options.append(f"--{key}={value}")
    options += ["--no-requeue", *cfg.extra]
    q = shlex.quote
    agent = [sys.executable, "-P", "-m", "harness.runtime.nodeagent", str(run_dir), token, "--"]
    srun = ["srun", "--kill-on-bad-exit=1", "--open-mode=append"]
    srun += [f"--output={run_dir / STDOUT_FILE}", f"--error={run_dir / STDERR_FILE}"]
    if cfg.nodes * cfg.ntasks_per_node > 1:
        srun.append("--label")
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {o}" for o in options),
        f"# Written by the harness for run {run_id}; submitted with",
        f"#   sbatch --parsable --job-name=harness-{run_id} --output=slurm-%j.out (in the run",
        f"#   dir) --open-mode=append --chdir=(the spec's cwd) {SCRIPT_FILE}",
        "set -u",
        f"run_dir={q(str(run_dir))}",
        "# The run dir must be the supervisor's, seen from here: a shared filesystem.",
        f'if [ "$(cat "$run_dir/{VISIBLE_FILE}" 2>/dev/null)" != {q(token)} ]; then',
        '    echo "harness: the run directory $run_dir is not visible from node'
        ' $(hostname -s): put the state directory on a filesystem the nodes share" >&2',
        f"    exit {NOT_VISIBLE_EXIT}",
        "fi",
        " ".join(q(w) for w in [*srun, *agent, *argv]),
        "code=$?",
        "# Stopped by the harness: wait for its scancel, so Slurm records the job CANCELLED.",
        f'if [ -e "$run_dir/{ABORT_FILE}" ]; then sleep {_ABORT_WAIT_S}; fi',
        'exit "$code"',
        "",
    ]
    return "\n".join(lines)


@dataclass
class SlurmJob:
    """One submitted job; ``job_id`` changes when the harness resubmits it (requeue_on)."""

    run_id: str
    run_dir: Path
    cfg: SlurmConfig
    job_id: str
    submitted_at: float
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    attempt: int = 1
    resume: list[str] = field(default_factory=list)  # the spec's resume words
    _state: SlurmState | None = None
    _next_query: float = 0.0
    _ended: tuple[bool, int | None] | None = None
    _queued_since: float = field(default_factory=time.time)
    _detail: str = ""
    _stopping: bool = False  # an abort began: an end is final, never resubmitted
    notes: list[str] = field(default_factory=list)  # what the supervisor should say (requeues)

    def __post_init__(self) -> None:
        self.probe = NodeProbe(self.run_dir)

    @property
    def record(self) -> procs.ProcRecord:
        return procs.ProcRecord(int(self.job_id), self.submitted_at, self.run_id)

    def poll(self) -> tuple[bool, int | None]:
        """(ended, the command's exit status), asking Slurm at most every ``poll_s``.

        A controller that does not answer is not an end: the job is asked about again at
        the next poll (the rules go on judging the node agents' samples meanwhile).
        """
        if self._ended is not None:
            return self._ended
        now = time.monotonic()
        if now < self._next_query:
            return False, None
        self._next_query = now + self.cfg.poll_s
        try:
            state = query_job(self.job_id)
        except OSError:
            return False, None
        if state is None:  # neither the controller nor accounting knows it: it is over
            state = SlurmState("COMPLETED" if read_exit(self.run_dir) == 0 else "UNKNOWN")
        if state.waiting and (self._state is None or not self._state.waiting):
            self._queued_since = state.submit_time or time.time()
        self._state = state
        if not state.ended and state.state != "UNKNOWN":
            return False, None
        again = state.state in self.cfg.requeue_on and self.attempt <= self.cfg.requeue_limit
        if again and not self._stopping:
            self._resubmit(state)
            return False, None
        code = read_exit(self.run_dir)
        if code is None and state.state in ("COMPLETED", "FAILED"):
            code = state.exit_code
        if not self._reached_run_dir() and state.state in ("FAILED", "COMPLETED", "UNKNOWN"):
            self._state = SlurmState("NOT_VISIBLE", state.reason, state.nodes, state.exit_code)
            self._detail = f"{self.run_dir}, node {state.nodes or '?'}"
        elif state.state == "TIMEOUT" and state.time_limit:
            self._detail = f"time limit {state.time_limit}"
        elif state.state == "OUT_OF_MEMORY" and self.cfg.mem:
            self._detail = f"--mem={self.cfg.mem}"
        self._ended = (True, code)
        return self._ended

    def _reached_run_dir(self) -> bool:
        return (self.run_dir / NODES_DIR).is_dir() or read_exit(self.run_dir) is not None

    def scheduler(self) -> SchedulerView | None:
        """The state as last asked (each note is handed out once)."""
        notes, self.notes = tuple(self.notes), []
        s = self._state
        if s is None:
            waited = time.time() - self.submitted_at
            return SchedulerView("SUBMITTED", "", waited, "", notes=notes)
        waited = time.time() - self._queued_since if s.waiting else 0.0
        return SchedulerView(s.state, s.reason, max(waited, 0.0), s.nodes, self._detail, notes)

    def processes(self) -> list[psutil.Process]:
        """None here: the job's processes are on the nodes; the node agents sample them."""
        return []

    def nodes(self) -> NodeProbe:
        return self.probe

    def _resubmit(self, state: SlurmState) -> None:
        """The job again, from its last checkpoint event through the spec's ``resume``."""
        resumed = last_checkpoint(self.run_dir) if self.resume else None
        argv = with_resume(self.argv, self.resume, resumed) if resumed else list(self.argv)
        old = self.job_id
        self.attempt += 1
        self.job_id = _submit(self.run_dir, self.run_id, argv, self.cfg, self.env, self.cwd)
        self.submitted_at, self._state, self._next_query = time.time(), None, 0.0
        _save(self)
        start = f"from {resumed}" if resumed else "from the start (no checkpoint event or resume)"
        self.notes.append(
            f"Slurm job {old} ended {state.state}: resubmitted as job {self.job_id} {start} "
            f"(attempt {self.attempt} of {self.cfg.requeue_limit + 1})"
        )

    def terminate(self, *, int_grace: float, term_grace: float) -> procs.Escalation:
        """INT, then Slurm's TERM-then-KILL, then KILL, to every process of the job, with
        the graces between; a pending job is cancelled. Survivors: the job id, if Slurm
        still has it running at the end."""
        t0 = time.monotonic()
        self._stopping = True
        signals: list[tuple[str, int]] = []
        try:
            state = query_job(self.job_id)
        except OSError:  # cannot tell: stop it as if it runs (scancel says what it can)
            state = self._state or SlurmState("RUNNING")
        if state is None or state.ended:
            return procs.Escalation(signals, [], time.monotonic() - t0, [])
        steps: list[tuple[str, list[str], float]] = [
            ("SIGINT", ["--signal=INT"], int_grace),
            ("SIGTERM", [], term_grace),
            ("SIGKILL", ["--signal=KILL", "--full"], max(term_grace, 10.0)),
        ]
        if state.waiting:  # nothing runs yet: nothing to checkpoint
            steps = [("cancel", [], max(term_grace, 10.0))]
        else:
            with contextlib.suppress(OSError):
                write_text_atomic(self.run_dir / ABORT_FILE, f"{time.time()}\n")
        for name, flags, grace in steps:
            _run(["scancel", *flags, self.job_id])
            signals.append((f"{name} (scancel)", 1))
            # after SIGINT, the command's own end is enough: the cancel that follows is
            # what makes Slurm record the job CANCELLED (the batch script waits for it)
            ended = self._wait_ended(grace, command_done=name == "SIGINT")
            if ended and name != "SIGINT":
                return procs.Escalation(signals, [], time.monotonic() - t0, [])
        return procs.Escalation(signals, [int(self.job_id)], time.monotonic() - t0, [])

    def _wait_ended(self, grace: float, *, command_done: bool = False) -> bool:
        """Whether the job ended (or, with ``command_done``, its first task's command)."""
        deadline = time.monotonic() + grace
        while True:
            if command_done and read_exit(self.run_dir) is not None:
                return True
            try:
                state = query_job(self.job_id)
                ended = state is None or state.ended
            except OSError:  # no answer is no end
                ended = False
            if ended:
                self._next_query = 0.0
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def _submit(
    run_dir: Path,
    run_id: str,
    argv: Sequence[str],
    cfg: SlurmConfig,
    env: Mapping[str, str],
    cwd: str,
) -> str:
    """Write the script and submit it; the job id. SpawnError with sbatch's own words."""
    token = (run_dir / VISIBLE_FILE).read_text(encoding="utf-8").strip()
    script = run_dir / SCRIPT_FILE
    write_text_atomic(
        script, batch_script(argv, run_id=run_id, run_dir=run_dir, token=token, cfg=cfg)
    )
    command = [
        "sbatch",
        "--parsable",
        f"--job-name=harness-{run_id}",
        f"--output={run_dir}/slurm-%j.out",
        "--open-mode=append",
        f"--chdir={cwd}",
        str(script),
    ]
    code, out, err = _run(command, env=env)
    if code != 0:
        raise SpawnError(f"sbatch refused the job: {_first_line(err) or f'exit status {code}'}")
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SpawnError(f"sbatch answered {out.strip()[:80]!r}, not a job id")
    return job_id


def _save(job: SlurmJob) -> None:
    write_json_atomic(
        job.run_dir / STATE_FILE,
        {
            "job_id": job.job_id,
            "submitted_at": job.submitted_at,
            "attempt": job.attempt,
            "argv": job.argv,
            "cwd": job.cwd,
        },
    )


def _job_env(run_dir: Path, run_id: str) -> dict[str, str]:
    """The environment a re-adopted job is resubmitted with: what its launch had."""
    from harness.core.spec import RunSpec
    from harness.runtime.specs import launch_env, run_env

    try:
        spec = RunSpec.model_validate_json((run_dir / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no spec kept: the protocol's variables only
        return run_env(run_dir, run_id, {})
    return launch_env(spec, run_dir, run_id)


class SlurmLauncher:
    name = "slurm"
    remote = True

    def __init__(self, cfg: SlurmConfig | None = None, *, resume: Sequence[str] = ()) -> None:
        self.cfg = cfg or SlurmConfig()
        self.resume = list(resume)  # the spec's: how a resubmission resumes the command

    def start(
        self,
        argv: Sequence[str],
        *,
        run_id: str,
        run_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
    ) -> SlurmJob:
        if shutil.which("sbatch", path=env.get("PATH")) is None:
            raise SpawnError("cannot submit: sbatch is not on PATH (install Slurm's client)")
        token = secrets.token_hex(16)
        write_text_atomic(run_dir / VISIBLE_FILE, token + "\n")
        job_id = _submit(run_dir, run_id, argv, self.cfg, env, str(cwd))
        job = SlurmJob(
            run_id,
            run_dir,
            self.cfg,
            job_id,
            time.time(),
            list(argv),
            dict(env),
            str(cwd),
            resume=self.resume,
        )
        _save(job)
        return job

    def adopt(self, record: procs.ProcRecord, run_dir: Path) -> SlurmJob:
        saved: dict[str, object] = {}
        try:
            loaded = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                saved = loaded
        except (OSError, ValueError):
            pass
        job_id = str(saved.get("job_id") or record.pid)
        argv, attempt, cwd = saved.get("argv"), saved.get("attempt"), saved.get("cwd")
        return SlurmJob(
            record.run_id,
            run_dir,
            self.cfg,
            job_id,
            record.create_time,
            [str(w) for w in argv] if isinstance(argv, list) else [],
            _job_env(run_dir, record.run_id),
            str(cwd) if isinstance(cwd, str) else ".",
            attempt if isinstance(attempt, int) else 1,
            resume=self.resume,
        )

    def alive(self, record: procs.ProcRecord, run_dir: Path) -> bool:
        """Whether the job is still queued or running; True when Slurm cannot be asked."""
        job = self.adopt(record, run_dir)
        try:
            state = query_job(job.job_id)
        except OSError:
            return True  # the controller is down: the job may well run; watch it
        return state is not None and not state.ended
