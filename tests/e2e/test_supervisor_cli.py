"""The supervisor through the real command line: `harness run | adopt | abort | status |
runs | logs | check` as subprocesses with HARNESS_HOME in tmp_path, real signals included.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

import mistakes as ml
from memory import Run, Store
from tests.e2e.conftest import FAST_WATCH, Reaper, gone, job, wait_for

HARNESS = [sys.executable, "-m", "harness"]


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # strings, numbers, lists of strings: JSON is valid TOML here


def write_spec(path: Path, name: str, command: list[str], **tables: dict[str, Any]) -> Path:
    lines = [f"name = {_toml(name)}", f"command = {_toml(command)}", 'device = "cpu"']
    watch = {**FAST_WATCH, **tables.pop("watch", {})}
    for table, values in {"watch": watch, **tables}.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Cli:
    """Runs `harness` subprocesses against one state dir; everything is reaped at the end."""

    def __init__(self, home: Path, reaper: Reaper, tmp: Path) -> None:
        self.home, self.reaper, self.tmp = home, reaper, tmp
        self.env = reaper.env(HARNESS_HOME=str(home))
        self._store: Store | None = None

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HARNESS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def start(self, *args: str, log: str) -> tuple[subprocess.Popen[bytes], Path]:
        """A long-running command in the background; its stdout and stderr go to a file."""
        out = self.tmp / f"{log}.out"
        with out.open("wb") as f:
            proc = self.reaper.popen(
                [*HARNESS, *args], env=self.env, stdout=f, stderr=subprocess.STDOUT, cwd=self.tmp
            )
        return proc, out

    @property
    def store(self) -> Store:
        if self._store is None:
            wait_for((self.home / "harness.db").exists, what="the database")
            self._store = ml.open_log(self.home / "harness.db")
        return self._store

    def run_named(self, name: str) -> Run | None:
        from sqlmodel import select

        with self.store.read() as s:
            return s.exec(select(Run).where(Run.name == name)).first()

    def wait_running(self, name: str, proc: subprocess.Popen[bytes], out: Path) -> Run:
        """The run once its job runs; fails at once if its `harness run` exits first."""

        def running() -> bool:
            row = self.run_named(name)
            return row is not None and row.status == "running" and row.pid is not None

        wait_for(running, what=f"{name} running", while_alive=proc, output=out)
        row = self.run_named(name)
        assert row is not None
        return row

    def json(self, *args: str) -> Any:
        res = self(*args, "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@pytest.fixture
def cli(tmp_path: Path, reaper: Reaper) -> Any:
    c = Cli(tmp_path / "state", reaper, tmp_path)
    try:
        yield c
    finally:
        reaper.cleanup()
        c.close()


def _one_line_error(res: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Bad input exits 2; a failure (not found, a finished run) exits 1: one line either way."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("harness: error: ")
    return lines[0]


# -- 10. re-adoption ---------------------------------------------------------------------


def test_adopt_after_sigkill_finishes_the_live_job_and_marks_the_dead_one_lost(
    cli: Cli, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    keeper = write_spec(
        tmp_path / "keeper.toml",
        "keeper",
        job("steady.py", "--release", release, "--end", "score=0.97"),
        gates={"score": ">= 0.9"},
    )
    victim = write_spec(tmp_path / "victim.toml", "victim", job("steady.py", "--seconds", 120))
    sup_a, out_a = cli.start("run", str(keeper), log="run-keeper")
    sup_b, out_b = cli.start("run", str(victim), log="run-victim")
    a, b = cli.wait_running("keeper", sup_a, out_a), cli.wait_running("victim", sup_b, out_b)
    assert a.pid is not None and b.pid is not None

    # Both supervisors die hard; the jobs live on in their own sessions.
    sup_a.send_signal(signal.SIGKILL)
    sup_b.send_signal(signal.SIGKILL)
    assert sup_a.wait(timeout=10) == -signal.SIGKILL
    assert sup_b.wait(timeout=10) == -signal.SIGKILL
    assert not gone(a.pid) and not gone(b.pid)
    # The victim's job dies while nobody watches (its wrapper keeps the exit status).
    wrapper = psutil.Process(b.pid)
    wait_for(lambda: len(wrapper.children()) == 1, what="victim command started")
    (victim_cmd,) = wrapper.children()
    victim_cmd.kill()
    wait_for((Path(b.run_dir) / "exit.json").exists, what="victim exit.json")

    adopt, adopt_out = cli.start("adopt", log="adopt")
    wait_for(
        lambda: (row := cli.run_named("keeper")) is not None and row.supervisor_pid == adopt.pid,
        what="keeper re-adopted",
        while_alive=adopt,
        output=adopt_out,
    )
    release.write_text("go\n")
    assert adopt.wait(timeout=60) == 0, adopt_out.read_text()

    out = adopt_out.read_text()
    assert "keeper: re-adopted after a supervisor restart" in out
    assert "victim: lost: its job died while no supervisor watched" in out
    kept = cli.json("status", a.id)
    assert kept["status"] == "succeeded", kept["summary"]
    assert kept["summary"] == "succeeded: score = 0.97 (pass, gate score >= 0.9)"
    assert kept["exit_code"] == 0
    lost = cli.json("status", b.id)
    assert lost["status"] == "lost"
    assert lost["exit_code"] == -signal.SIGKILL
    assert lost["summary"] == "lost: the job ended while no supervisor watched it (exit code -9)"
    with cli.store.read() as s:
        (inc,) = ml.list_incidents(session=s, run_id=b.id)
    assert inc.rule == "lost" and inc.evidence == {"pid": b.pid, "exit_code": -9}
    assert gone(a.pid)


def test_abort_of_a_run_whose_supervisor_died_stops_the_job_itself(
    cli: Cli, tmp_path: Path
) -> None:
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    spec = write_spec(
        tmp_path / "orphan.toml", "orphan", job("steady.py", "--ready", ready, "--checkpoint", ckpt)
    )
    sup, out = cli.start("run", str(spec), log="run-orphan")
    row = cli.wait_running("orphan", sup, out)
    wait_for(ready.exists, what="job ready", while_alive=sup, output=out)
    sup.send_signal(signal.SIGKILL)
    assert sup.wait(timeout=10) == -signal.SIGKILL

    res = cli("abort", row.id, "--reason", "nobody is watching")

    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        f"{row.id}: aborted: nobody is watching (no supervisor was watching)"
    )
    assert ckpt.exists()  # SIGINT first, even without a supervisor
    assert gone(row.pid or 0)
    assert cli.json("status", row.id)["status"] == "aborted"


# -- 11. bad input -----------------------------------------------------------------------


def test_bad_specs_and_overrides_are_one_line_errors(cli: Cli, tmp_path: Path) -> None:
    good = job("steady.py", "--seconds", 0.2)
    unknown = write_spec(tmp_path / "unknown.toml", "x", good)
    unknown.write_text(unknown.read_text().replace('device = "cpu"', 'colour = "red"'))
    wrong_type = write_spec(tmp_path / "wrong.toml", "x", good, watch={"min_util": "high"})
    missing = tmp_path / "missing.toml"
    missing.write_text('name = "x"\n')
    no_exe = write_spec(tmp_path / "noexe.toml", "x", ["/nonexistent/bin/trainer", "--fast"])
    no_exe_path = write_spec(tmp_path / "noexe2.toml", "x", ["no-such-trainer-xyz"])

    line = _one_line_error(cli("run", str(unknown)))
    assert "unknown key 'colour'" in line and "unknown.toml" in line
    line = _one_line_error(cli("run", str(wrong_type)))
    assert "watch.min_util" in line and "'high'" in line
    line = _one_line_error(cli("run", str(missing)))
    assert "missing required key 'command'" in line
    line = _one_line_error(cli("run", str(no_exe)))
    assert "'/nonexistent/bin/trainer' does not exist" in line
    line = _one_line_error(cli("run", str(no_exe_path)))
    assert "'no-such-trainer-xyz' not found on PATH" in line
    ok = write_spec(tmp_path / "ok.toml", "x", good)
    line = _one_line_error(cli("run", str(ok), "--set", "watch.colour=1"))
    assert "unknown key 'watch.colour'" in line
    line = _one_line_error(cli("run", str(ok), "--set", "watch.min_util=lots"))
    assert "watch.min_util" in line
    line = _one_line_error(cli("abort", "no-such-run"), code=1)
    assert "no run 'no-such-run'" in line
    # None of them started anything.
    assert cli.json("runs") == []


def test_garbage_in_metrics_is_counted_warned_once_and_the_run_succeeds(
    cli: Cli, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path / "garbage.toml",
        "garbage",
        job("steady.py", "--seconds", 1.5, "--garbage", "--end", "score=1"),
        gates={"score": ">= 0.9"},
    )

    res = cli("run", str(spec))

    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    warnings = [ln for ln in res.stdout.splitlines() if "metrics.jsonl" in ln]
    assert len(warnings) == 1, res.stdout
    assert "unreadable line(s) skipped" in warnings[0]
    assert "garbage: succeeded: score = 1 (pass, gate score >= 0.9)" in res.stdout
    (run,) = cli.json("runs")
    assert run["status"] == "succeeded"
    assert run["result"]["progress"]["garbage"] == 4
    assert run["result"]["progress"]["oversized"] == 1
    assert run["result"]["gates"][0]["passed"] is True
    # A finished run cannot be aborted: one line, exit 1.
    line = _one_line_error(cli("abort", run["id"]), code=1)
    assert f"run {run['id']} is already succeeded" in line


# -- Ctrl-C, abort from another terminal, logs ------------------------------------------


def test_ctrl_c_aborts_the_run_cleanly_and_the_job_can_checkpoint(cli: Cli, tmp_path: Path) -> None:
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    spec = write_spec(
        tmp_path / "ctrlc.toml", "ctrlc", job("steady.py", "--ready", ready, "--checkpoint", ckpt)
    )
    proc, out = cli.start("run", str(spec), log="run-ctrlc")
    row = cli.wait_running("ctrlc", proc, out)
    wait_for(ready.exists, what="job ready", while_alive=proc, output=out)

    proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C

    assert proc.wait(timeout=60) == 1, out.read_text()
    text = out.read_text()
    assert "Ctrl-C: aborting the run cleanly" in text
    assert "Traceback" not in text
    assert ckpt.read_text().startswith("step ")  # the job got SIGINT and checkpointed
    status = cli.json("status", row.id)
    assert status["status"] == "aborted"
    assert status["summary"] == "aborted: abort requested by terminal: Ctrl-C at the terminal"
    assert status["exit_code"] == 0  # it stopped by itself after the checkpoint
    assert gone(row.pid or 0)


def test_ctrl_c_during_preflight_still_ends_with_an_aborted_run(cli: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "slow.toml", "slow", job("steady.py", "--seconds", 60))
    spec.write_text(
        spec.read_text().replace(
            'device = "cpu"', f'device = "cpu"\npreflight = [{_toml(job("sleeper.py", 2))}]'
        )
    )
    proc, out = cli.start("run", str(spec), log="run-slow")
    wait_for(
        lambda: (row := cli.run_named("slow")) is not None and row.status == "preflight",
        what="preflight",
        while_alive=proc,
        output=out,
    )

    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=60) == 1, out.read_text()
    assert "Traceback" not in out.read_text()
    row = cli.run_named("slow")
    assert row is not None
    assert row.status == "aborted", row.summary  # not left in preflight, nor running unwatched
    assert row.summary == "aborted: abort requested by terminal: Ctrl-C at the terminal"
    assert gone(row.pid or 0)


def test_abort_from_another_terminal_while_run_watches(cli: Cli, tmp_path: Path) -> None:
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    spec = write_spec(
        tmp_path / "long.toml", "long", job("steady.py", "--ready", ready, "--checkpoint", ckpt)
    )
    proc, out = cli.start("run", str(spec), log="run-long")
    row = cli.wait_running("long", proc, out)
    wait_for(ready.exists, what="job ready", while_alive=proc, output=out)
    active = cli.json("status")
    assert [r["id"] for r in active] == [row.id]
    assert active[0]["status"] == "running"

    res = cli("abort", row.id[:12], "--reason", "wrong learning rate")

    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        f"{row.id}: aborted: abort requested by terminal: wrong learning rate"
    )
    assert proc.wait(timeout=60) == 1, out.read_text()
    assert "aborting: abort requested by terminal: wrong learning rate" in out.read_text()
    assert ckpt.exists()
    assert cli.json("status") == []
    (run,) = cli.json("runs")
    assert run["status"] == "aborted"
    logs = cli("logs", row.id)
    assert logs.returncode == 0
    assert logs.stdout.startswith("steady: started as ")
    with cli.store.read() as s:
        (inc,) = ml.list_incidents(session=s, run_id=row.id)
    assert inc.rule == "user_abort"


def test_logs_prints_the_jobs_stdout_and_stderr(cli: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "crash.toml", "crash", job("crash.py"))

    res = cli("run", str(spec))

    assert res.returncode == 1
    assert "crash: failed: exit code 3: RuntimeError: shape mismatch" in res.stdout
    err = cli("logs", "last", "--stderr")
    assert err.returncode == 0
    assert (
        err.stdout == "loading shard 7 of 9\nRuntimeError: shape mismatch in layer 4 (64 vs 32)\n"
    )
    assert cli("logs", "last").stdout == ""


# -- harness check -----------------------------------------------------------------------


def test_check_fails_on_ram_headroom_and_prints_pass_fail_lines(cli: Cli) -> None:
    res = cli("check", "cpu-burn", "--set", "watch.min_ram_free_gb=100000")

    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines and all(ln.startswith(("PASS  ", "FAIL  ")) for ln in lines), lines
    ram = next(ln for ln in lines if "RAM headroom" in ln)
    assert ram.startswith("FAIL  RAM headroom (M-030): RAM ")
    assert ram.endswith(" GB free before launch, minimum 100000 GB")
    assert "PASS  stale processes (M-025): none found" in lines
    assert any(ln.startswith("PASS  command") for ln in lines)

    ok = cli("check", "cpu-burn", "--set", "watch.min_ram_free_gb=0.01")
    assert ok.returncode == 0, ok.stdout
    assert all(ln.startswith("PASS  ") for ln in ok.stdout.strip().splitlines())
    assert cli.json("runs") == []  # check launches nothing
