"""The torchrun launcher: its command line, its reading of torchrun's failure report, the
per-rank files, and real torchrun agents with stdlib ranks (no torch in the ranks, so each
test takes a few seconds): restarts, one SIGINT per rank, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.core.spec import RunSpec, TorchrunConfig, spec_from_mapping
from harness.errors import SpawnError, SpecError
from harness.runtime import cgroups
from harness.runtime.launchers import launcher_for
from harness.runtime.launchers.torchrun import (
    RANK_LOG_DIR,
    RankFailure,
    TorchrunJob,
    TorchrunLauncher,
    describe_failure,
    first_failure,
    parse_report,
    rank_logs,
    torchrun_argv,
)
from harness.runtime.procs import marked_processes
from harness.runtime.tail import rank_metric_files, rank_rates

JOBS = Path(__file__).parent / "jobs"
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "RANK"))}
RUN = Path("/runs/r1")


# -- the command line ----------------------------------------------------------------------


def test_a_python_module_command_runs_under_torchrun_with_its_interpreter() -> None:
    cfg = TorchrunConfig(nproc_per_node=2)
    argv, env = torchrun_argv(["/venv/bin/python", "-P", "-m", "model.train", "--x", "1"], cfg, RUN)
    assert argv[:4] == ["/venv/bin/python", "-P", "-m", "torch.distributed.run"]
    assert argv[-4:] == ["-m", "model.train", "--x", "1"]
    options = argv[4:-4]
    assert options[0] == "--standalone"
    assert options[options.index("--nproc-per-node") + 1] == "2"
    assert options[options.index("--max-restarts") + 1] == "0"
    assert options[options.index("--log-dir") + 1] == str(RUN / RANK_LOG_DIR)
    assert options[options.index("--tee") + 1] == "3"
    # -P cannot reach the ranks as a flag (torchrun runs `python -u`): as the environment
    assert env == {"PYTHONSAFEPATH": "1"}


def test_a_script_a_program_and_the_table_settings() -> None:
    cfg = TorchrunConfig(nproc_per_node=4, standalone=False, max_restarts=3, monitor_interval_s=1)
    argv, env = torchrun_argv(["python3", "train.py", "--lr", "0.1"], cfg, RUN)
    assert argv[-3:] == ["train.py", "--lr", "0.1"] and env == {}
    assert "--standalone" not in argv
    assert argv[argv.index("--max-restarts") + 1] == "3"
    assert argv[argv.index("--monitor-interval") + 1] == "1"
    argv, _ = torchrun_argv(["./train.sh", "a"], cfg, RUN)
    assert argv[0] == sys.executable and argv[-3:] == ["--no-python", "./train.sh", "a"]


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (["python", "-c", "print(1)"], "not 'python -c'"),
        (["python", "-X", "dev", "t.py"], "the interpreter option '-X' cannot reach the ranks"),
        (["python", "-m"], "'-m' needs a module name"),
        (["python", "-u"], "needs a script or '-m module'"),
    ],
)
def test_commands_torchrun_cannot_run_as_written_are_refused_in_one_line(
    command: list[str], why: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(why)):
        torchrun_argv(command, TorchrunConfig(), RUN)
    launcher = TorchrunLauncher()
    with pytest.raises(SpawnError, match=r"^cannot start job under torchrun: command: "):
        launcher.start(command, run_id="r", run_dir=RUN, cwd=Path("/"), env={})


def test_the_spec_table_is_validated() -> None:
    spec = spec_from_mapping(
        {
            "name": "d",
            "command": ["python", "t.py"],
            "launcher": "torchrun",
            "torchrun": {"nproc_per_node": 8, "max_restarts": 2},
        },
        source="d.toml",
    )
    assert spec.torchrun == TorchrunConfig(nproc_per_node=8, max_restarts=2)
    plain = RunSpec.model_validate({"name": "d", "command": ["p"], "launcher": "torchrun"})
    assert plain.torchrun == TorchrunConfig(nproc_per_node=1, standalone=True, max_restarts=0)
    launcher = launcher_for(spec.launcher, torchrun=spec.torchrun)
    assert isinstance(launcher, TorchrunLauncher) and launcher.config.nproc_per_node == 8
    bad = [
        ({"nproc_per_node": 0}, "d.toml: torchrun.nproc_per_node: Input should be greater"),
        ({"nproc_per_node": "2"}, "d.toml: torchrun.nproc_per_node: Input should be a valid int"),
        ({"max_restarts": -1}, "d.toml: torchrun.max_restarts: Input should be greater"),
        ({"nprocs": 2}, "d.toml: unknown key 'torchrun.nprocs'"),
    ]
    for table, message in bad:
        data = {"name": "d", "command": ["python"], "launcher": "torchrun", "torchrun": table}
        with pytest.raises(SpecError) as info:
            spec_from_mapping(data, source="d.toml")
        assert str(info.value).startswith(message), info.value
    with pytest.raises(SpecError, match="'k8s' is not available"):
        launcher_for("k8s")


# -- torchrun's failure report -------------------------------------------------------------


def _entry(idx: int, rank: int, code: str, trace: str, time: str = "2026-12-01_21:45:04") -> str:
    return (
        f"[{idx}]:\n  time      : {time}\n  host      : localhost\n"
        f"  rank      : {rank} (local_rank: {rank})\n  exitcode  : {code}\n"
        f"  error_file: <N/A>\n  traceback : {trace}"
    )


def report(root: str, *others: str) -> str:
    """A failure report as torchrun 2.13 prints it (errors/__init__.py templates)."""
    border, section = "=" * 54, "-" * 54
    return (
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        f"{border}\n/tmp/w.py FAILED\n{section}\nFailures:\n"
        + ("\n".join(others) if others else "  <NO_OTHER_FAILURES>")
        + f"\n{section}\nRoot Cause (first observed failure):\n{root}\n{border}\n"
    )


KILLED = _entry(0, 1, "-9 (pid: 1713)  (SIGKILL)", "Signal 9 (SIGKILL) received by PID 1713")
STOPPED = _entry(1, 0, "-15 (pid: 1712)  (SIGTERM)", "Signal 15 (SIGTERM) received by PID 1712")
CRASHED = _entry(
    0,
    1,
    "1 (pid: 9184) ",
    "Traceback (most recent call last):\n"
    '    File "/work/main/model/train.py", line 247, in _run\n'
    '      ckpt = torch.load(cfg.resume, map_location="cpu", weights_only=False)\n'
    "             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "  FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent.pt'\n  ",
)


def test_the_report_gives_the_failed_ranks_root_cause_first() -> None:
    failures = parse_report("[default0]: noise\n" + report(KILLED, STOPPED))
    assert failures == [
        RankFailure(1, 1, -9, 1713, "2026-12-01_21:45:04", ""),
        RankFailure(0, 0, -15, 1712, "2026-12-01_21:45:04", ""),
    ]
    assert failures[0].how == "killed by SIGKILL"
    (crash,) = parse_report(report(CRASHED))
    assert crash.how == "exit code 1"
    assert (
        crash.message == "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent.pt'"
    )
    assert parse_report("Traceback ...\nSignalException: Process 7 got signal: 2\n") == []


def test_a_rank_killed_by_a_signal_is_the_cause_when_torchrun_ties_the_second() -> None:
    # rank 0's collective broke when rank 1 was killed; both seen in the same second, and
    # torchrun breaks the tie by rank
    broke = _entry(0, 0, "1 (pid: 20) ", "RuntimeError: Connection closed by peer")
    killed = _entry(1, 1, "-9 (pid: 21)  (SIGKILL)", "Signal 9 (SIGKILL) received by PID 21")
    assert first_failure(parse_report(report(broke, killed))) == RankFailure(
        1, 1, -9, 21, "2026-12-01_21:45:04", ""
    )
    later = _entry(1, 1, "-9 (pid: 21)  (SIGKILL)", "x", time="2026-12-01_21:45:09")
    assert first_failure(parse_report(report(broke, later))).rank == 0  # type: ignore[union-attr]


def test_the_failure_line_names_the_rank_how_it_ended_and_the_restarts(tmp_path: Path) -> None:
    assert describe_failure(tmp_path, report(KILLED, STOPPED), 0) == (
        "rank 1 failed first (local rank 1, pid 1713): killed by SIGKILL; "
        "then rank 0: killed by SIGTERM"
    )
    # no traceback in the report: the rank's own last stderr line says what happened
    for attempt in (0, 1):
        log = tmp_path / RANK_LOG_DIR / "abc_x1" / f"attempt_{attempt}" / "1" / "stderr.log"
        log.parent.mkdir(parents=True)
        log.write_text(f"warming up\nValueError: bad batch {attempt}\n")
    silent = _entry(0, 1, "2 (pid: 5) ", "To enable traceback see: https://pytorch.org/docs")
    assert describe_failure(tmp_path, report(silent), 1) == (
        "rank 1 failed first (local rank 1, pid 5): exit code 2: ValueError: bad batch 1; "
        "1 restart of the group used (max_restarts 1)"
    )
    assert describe_failure(tmp_path, "exit 1, no report", 1) is None


def test_rank_logs_come_one_per_attempt_in_order(tmp_path: Path) -> None:
    for attempt in (10, 2, 0):
        d = tmp_path / RANK_LOG_DIR / "id_r" / f"attempt_{attempt}" / "0"
        d.mkdir(parents=True)
        (d / "stdout.log").write_text(str(attempt))
    (tmp_path / RANK_LOG_DIR / "id_r" / "attempt_x" / "0").mkdir(parents=True)
    assert [p.read_text() for p in rank_logs(tmp_path, 0)] == ["0", "2", "10"]
    assert rank_logs(tmp_path, 1) == [] and rank_logs(tmp_path, 0, "stderr") == []


# -- per-rank metrics ----------------------------------------------------------------------


def _write(path: Path, *records: Mapping[str, object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_rank_rates_show_a_straggler_and_survive_bad_lines(tmp_path: Path) -> None:
    _write(
        tmp_path / "metrics.jsonl",
        {"event": "start", "t": 99.0},
        {"step": 10, "t": 100.0, "samples_per_s": 500.0, "fwd_ms": 10.0},
        {"step": 20, "t": 102.0, "samples_per_s": 500.0, "fwd_ms": 11.0},
        {"step": 20, "t": 102.5, "avg_bit_acc": 0.9, "pos_acc": [0.9, 0.8]},
    )
    _write(
        tmp_path / "metrics.rank1.jsonl",
        {"step": 10, "t": 100.0, "samples_per_s": 500.0, "fwd_ms": 40.0},
        {"step": 20, "t": 102.0, "samples_per_s": 500.0, "fwd_ms": 42.0, "bad": float("nan")},
    )
    (tmp_path / "metrics.rank2.jsonl").write_text('{"step": 1, "t": 5}\nnot json\n{"step":')
    (tmp_path / "metrics.rank3.jsonl").mkdir()  # not a file: no figures, no error
    (tmp_path / "metrics.rankx.jsonl").write_text("")
    assert sorted(rank_metric_files(tmp_path)) == [1, 2, 3]

    r0, r1, r2, r3 = rank_rates(tmp_path, tmp_path / "metrics.jsonl")

    assert (r0.rank, r0.step, r0.steps_per_s) == (0, 20, 5.0)
    assert r0.metrics["fwd_ms"] == 11.0 and r0.metrics["avg_bit_acc"] == 0.9
    assert (r1.step, r1.metrics["fwd_ms"]) == (20, 42.0) and "bad" not in r1.metrics
    assert (r2.step, r2.steps_per_s) == (1, None)
    assert (r3.step, r3.metrics) == (None, {})
    # a file larger than what is read: its cut first line is not taken for a record
    _write(tmp_path / "metrics.rank1.jsonl", *({"step": i, "t": float(i)} for i in range(1, 2000)))
    (one,) = [r for r in rank_rates(tmp_path, limit=300) if r.rank == 1]
    assert one.step == 1999 and one.steps_per_s == pytest.approx(1.0)


# -- real torchrun agents, stdlib ranks ------------------------------------------------------


class Started:
    """Jobs started through the torchrun launcher; everything of theirs killed afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.jobs: list[TorchrunJob] = []

    def start(self, *args: str, use_cgroups: bool = False, **table: Any) -> TorchrunJob:
        run_id = f"test-{uuid.uuid4().hex[:12]}"
        run_dir = self.tmp / run_id
        run_dir.mkdir()
        launcher = TorchrunLauncher(TorchrunConfig(**table), use_cgroups=use_cgroups)
        argv = [sys.executable, str(JOBS / "ranks.py"), *args]
        job = launcher.start(argv, run_id=run_id, run_dir=run_dir, cwd=self.tmp, env=BASE_ENV)
        self.jobs.append(job)
        return job

    def cleanup(self) -> None:
        for job in self.jobs:
            if job.local.cgroup is not None:
                cgroups.kill(job.local.cgroup)
            for proc in marked_processes(job.record.run_id):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            if job.popen is not None:
                if job.popen.poll() is None:
                    job.popen.kill()
                job.popen.wait(timeout=10)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    s = Started(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def wait_exit(job: TorchrunJob, timeout: float = 60.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited, code = job.poll()
        if exited:
            return code
        time.sleep(0.05)
    raise AssertionError(f"torchrun job still running after {timeout:g} s")


def wait_ready(job: TorchrunJob, ranks: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [rank_logs(job.run_dir, r) for r in range(ranks)]
        # and torchrun's agent is done starting them: its tee has copied each "ready" (a
        # SIGINT while the agent is still in start_processes never reaches the ranks)
        tee = (job.run_dir / "stdout.log").read_text()
        if all(log and "ready" in log[-1].read_text() for log in logs) and all(
            f"[default{r}]:ready" in tee for r in range(ranks)
        ):
            return
        assert not job.poll()[0], (job.run_dir / "stderr.log").read_text()
        time.sleep(0.05)
    raise AssertionError("the ranks did not get ready")


def test_max_restarts_lets_torchrun_restart_a_failed_group(started: Started) -> None:
    job = started.start("flaky", "1", nproc_per_node=2, max_restarts=1)
    assert wait_exit(job) == 0
    logs = rank_logs(job.run_dir, 1)
    assert [p.read_text().split(" pid")[0] for p in logs] == [
        "rank 1 attempt 0",
        "rank 1 attempt 1",
    ]
    assert "harness: torchrun:" not in (job.run_dir / "stderr.log").read_text()


def test_without_restarts_the_run_ends_naming_the_rank_that_failed(started: Started) -> None:
    job = started.start("flaky", "1", nproc_per_node=2)
    assert wait_exit(job) == 1
    assert wait_exit(job) == 1  # polled again: the note is added once
    last = (job.run_dir / "stderr.log").read_text().splitlines()[-2:]
    assert last[0] == "=" * len(last[0])  # torchrun's report ended here...
    assert re.fullmatch(  # ... and the harness says what it meant
        r"harness: torchrun: rank 1 failed first \(local rank 1, pid \d+\): exit code 3: "
        r"flaky: rank 1 gives up",
        last[1],
    ), last
    assert marked_processes(job.record.run_id) == []


def test_abort_sends_one_sigint_to_each_rank_through_the_agent(started: Started) -> None:
    job = started.start("sigint", nproc_per_node=2)
    wait_ready(job, 2)

    escalation = job.terminate(int_grace=30, term_grace=5)

    assert escalation.signals == [("SIGINT", 1)]  # the agent; it forwarded it to the ranks
    assert escalation.survivors == []
    for rank in (0, 1):
        assert "SIGINT x1" in rank_logs(job.run_dir, rank)[-1].read_text()
    assert marked_processes(job.record.run_id) == []


@pytest.mark.parametrize("use_cgroups", [True, False], ids=["cgroup", "session"])
def test_abort_leaves_no_grandchild_of_a_rank_that_left_its_session(
    started: Started, use_cgroups: bool
) -> None:
    job = started.start("escape", nproc_per_node=2, use_cgroups=use_cgroups)
    if use_cgroups and job.local.cgroup is None:
        pytest.skip("no writable cgroup v2 here")
    wait_ready(job, 2)
    job.processes()  # what the probes do every second: the ledger notes everything seen
    text = [rank_logs(job.run_dir, r)[-1].read_text() for r in (0, 1)]
    strays = [int(re.search(r"grandchild (\d+)", t)[1]) for t in text]  # type: ignore[index]
    assert all(os.getsid(pid) == pid for pid in strays)

    escalation = job.terminate(int_grace=1, term_grace=1)

    assert escalation.survivors == []
    assert marked_processes(job.record.run_id) == []
    assert [pid for pid in strays if not _gone(pid)] == []


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
