"""The supervisor end to end on the test's event loop: real jobs, real signals, real SQLite.

Each test launches a small stdlib job (tests/e2e/jobs/) through :class:`Supervisor` with a
store in tmp_path and checks what a user would see: the verdict, the incident with its
mistake id and numbers, and that no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlmodel import Session, select

from harness.core.spec import apply_overrides
from harness.errors import LaunchRefused
from harness.runtime.guard import GuardConfig
from harness.runtime.probes import CpuProbe
from harness.runtime.procs import MARKER_ENV
from harness.runtime.specs import load_spec
from harness.runtime.supervisor import Supervisor
from memory import Run, Store, register_process
from tests.e2e.conftest import (
    Notes,
    Reaper,
    await_for,
    finish,
    get_run,
    gone,
    incidents,
    job,
    make_spec,
    wait_for,
)


def _metric_lines(run: Run) -> list[dict[str, object]]:
    text = (Path(run.run_dir) / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- 1. success --------------------------------------------------------------------------


async def test_cpu_bound_job_succeeds_and_its_gates_pass(sup: Supervisor, store: Store) -> None:
    # The shipped preset: one busy process per core. The utilisation rule is live (the run
    # outlasts grace + window) with a threshold low enough for a 2-core machine that other
    # test runs load too (an idle job measures ~0.01; see the next test).
    spec, source = load_spec("cpu-burn")
    spec = apply_overrides(
        spec,
        [
            "args.seconds=4",
            "watch.min_util=0.15",
            "watch.util_grace_s=1",
            "watch.util_window_s=1.5",
            "watch.sample_every_s=0.25",
        ],
    )

    run_id = await sup.launch(spec, source=source)
    run = await finish(sup, run_id)

    assert run.status == "succeeded", run.summary
    assert run.exit_code == 0
    assert run.summary == "succeeded: score = 1 (pass, gate score >= 0.9)"
    assert run.result["gates"] == [
        {"metric": "score", "gate": "score >= 0.9", "value": 1.0, "passed": True}
    ]
    progress = run.result["progress"]
    assert progress["step"] >= 4 and progress["total_steps"] == 16
    assert progress["cpu_util"] is not None  # the probe ran
    assert run.ended_at is not None and run.started_at is not None
    assert run.ended_at - run.started_at > 1 + 1.5  # long enough for the rule to judge
    assert incidents(store, run_id) == []
    assert json.loads((Path(run.run_dir) / "exit.json").read_text())["code"] == 0


# -- 2. utilisation ----------------------------------------------------------------------


async def test_idle_job_is_aborted_after_grace_and_window_naming_m015(
    sup: Supervisor, store: Store
) -> None:
    grace, window = 1.0, 2.0
    spec = make_spec(
        job("steady.py", "--seconds", 60),
        watch={"min_util": 0.3, "util_grace_s": grace, "util_window_s": window},
    )

    run_id = await sup.launch(spec)
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    (inc,) = incidents(store, run_id)
    assert inc.rule == "utilisation"
    assert inc.mistake_id == "M-015"
    assert inc.evidence["mistake_ids"] == ["M-015", "M-035"]
    measured = inc.evidence["mean_util"]
    assert 0 <= measured < 0.3
    assert inc.evidence["threshold"] == 0.3
    assert inc.evidence["samples"] >= 2
    assert f"CPU {measured * 100:.0f} % over 2 s, threshold 30 %" in inc.summary
    assert run.summary == f"aborted: {inc.summary}"
    # Never before the grace period plus one full window (1 ms for clock rounding).
    assert run.started_at is not None
    assert inc.ts - run.started_at >= grace + window - 0.001


# -- 3. non-finite loss ------------------------------------------------------------------


async def test_nan_loss_aborts_within_a_second_of_the_line(sup: Supervisor, store: Store) -> None:
    spec = make_spec(job("nan_loss.py"))

    run_id = await sup.launch(spec)
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    nan_line = next(r for r in _metric_lines(run) if r.get("loss") == "nan")
    (inc,) = incidents(store, run_id)
    assert inc.rule == "nonfinite" and inc.mistake_id == "M-045"
    assert inc.evidence["metric"] == "loss" and inc.evidence["step"] == 5
    assert inc.summary == "loss is nan at step 5"
    assert isinstance(nan_line["t"], float)
    assert 0 <= inc.ts - nan_line["t"] < 1.0  # the bound: abort within 1 s


# -- 4. stall ----------------------------------------------------------------------------


async def test_job_that_stops_reporting_is_aborted_after_stall_s(
    sup: Supervisor, store: Store
) -> None:
    stall = 1.5
    spec = make_spec(job("go_silent.py"), watch={"stall_s": stall})

    run_id = await sup.launch(spec)
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    last = _metric_lines(run)[-1]
    assert last["step"] == 3
    (inc,) = incidents(store, run_id)
    assert inc.rule == "stall" and inc.mistake_id == "M-037"
    assert inc.evidence["stall_s"] == stall
    assert inc.evidence["silent_s"] > stall
    assert isinstance(last["t"], float)
    assert inc.ts - last["t"] > stall  # not before stall_s of silence
    assert "limit 1.5 s" in inc.summary


# -- 5. the whole tree -------------------------------------------------------------------


async def test_abort_leaves_no_survivor_of_a_tree_with_its_own_session(
    sup: Supervisor, store: Store, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    spec = make_spec(job("tree.py", pidfile), watch={"int_grace_s": 0.5, "term_grace_s": 0.5})

    run_id = await sup.launch(spec)
    await await_for(
        lambda: pidfile.exists() and len(pidfile.read_text().splitlines()) == 3, what="tree"
    )
    pids = {role: int(pid) for role, pid in (ln.split() for ln in pidfile.read_text().splitlines())}
    root = get_run(store, run_id).pid
    assert root is not None
    gc = pids["grandchild"]
    assert os.getsid(gc) == gc != os.getsid(pids["root"])  # it left the job's session
    await sup.request_abort(run_id, "test: stop the tree", by="test")
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    assert run.summary == "aborted: abort requested by test: test: stop the tree"
    survivors = [p for p in (root, *pids.values()) if not gone(p)]
    assert survivors == []
    (inc,) = incidents(store, run_id)
    assert inc.rule == "user_abort" and inc.severity == "info"


# -- 6. stale processes ------------------------------------------------------------------


async def test_stale_process_of_an_earlier_run_is_cleaned_and_a_decoy_is_left_alone(
    sup: Supervisor, store: Store, reaper: Reaper
) -> None:
    # What a crashed earlier run leaves: a finished run row, its registered process, alive.
    argv = job("sleeper.py", 120)
    old = "e2e-20260101-000000-dead"
    stale = reaper.popen(argv, env=reaper.env(**{MARKER_ENV: old}), start_new_session=True)
    decoy = reaper.popen(argv, start_new_session=True)  # same command line, not ours
    wait_for(lambda: psutil.Process(stale.pid).cmdline() == argv, what="stale started")
    wait_for(lambda: psutil.Process(decoy.pid).cmdline() == argv, what="decoy started")
    with store.write() as s:
        s.add(Run(id=old, name="e2e", status="failed", run_dir="/nonexistent", summary="crashed"))
        s.flush()
        ctime = psutil.Process(stale.pid).create_time()
        register_process(session=s, run_id=old, pid=stale.pid, create_time=ctime)

    run_id = await sup.launch(make_spec(job("steady.py", "--seconds", 0.5)))
    run = await finish(sup, run_id)

    assert run.status == "succeeded", run.summary
    assert stale.poll() is not None  # terminated before the launch
    assert decoy.poll() is None  # a process the harness did not start is never touched
    (inc,) = incidents(store, run_id)
    assert inc.rule == "stale_processes" and inc.mistake_id == "M-025"
    assert f"{stale.pid} ({old})" in inc.summary
    assert str(decoy.pid) not in inc.summary
    assert inc.action == "terminated before launch"


# -- 7. RAM before launch ----------------------------------------------------------------


async def test_launch_is_refused_when_ram_headroom_is_short(
    sup: Supervisor, store: Store, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    spec = make_spec(
        job("steady.py", "--seconds", 0.5, "--touch", ran), watch={"min_ram_free_gb": 100000}
    )

    with pytest.raises(LaunchRefused, match=r"RAM headroom: RAM .* GB free before launch"):
        await sup.launch(spec)

    with store.read() as s:
        (run,) = s.exec(select(Run)).all()
    assert run.status == "failed"
    assert run.pid is None and run.started_at is None
    assert run.summary.startswith("refused: RAM headroom: RAM ")
    assert run.summary.endswith(" GB free before launch, minimum 100000 GB")
    (inc,) = incidents(store, run.id)
    assert inc.rule == "ram_headroom" and inc.mistake_id == "M-030"
    assert inc.action == "refused launch"
    assert inc.evidence["check"] == "RAM headroom"
    await asyncio.sleep(0.5)
    assert not ran.exists()  # the job never started
    assert not (Path(run.run_dir) / "exit.json").exists()
    assert sup.running() == []


# -- 8. a gate whose metric never appears ------------------------------------------------


async def test_gate_on_a_metric_never_reported_fails_the_run(
    sup: Supervisor, store: Store, notes: Notes
) -> None:
    spec = make_spec(
        job("steady.py", "--seconds", 0.6, "--end", "score=0.99"),
        gates={"score": ">= 0.9", "avg_bit_acc": ">= 0.93"},
    )

    run_id = await sup.launch(spec)
    run = await finish(sup, run_id)

    assert run.status == "failed"
    assert run.exit_code == 0
    assert run.summary == "failed gates: avg_bit_acc: never reported (gate avg_bit_acc >= 0.93)"
    (inc,) = incidents(store, run_id)
    assert inc.rule == "gates" and inc.mistake_id == "M-014"
    assert "never reported" in inc.summary
    gates = {g["metric"]: g for g in run.result["gates"]}
    assert gates["score"]["passed"] and not gates["avg_bit_acc"]["passed"]
    assert any("never reported" in t and alert for t, alert in notes.items)


# -- 9. non-zero exit --------------------------------------------------------------------


async def test_job_exiting_non_zero_fails_with_its_stderr_tail(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(make_spec(job("crash.py")))
    run = await finish(sup, run_id)

    assert run.status == "failed"
    assert run.exit_code == 3
    assert run.summary == (
        "failed: exit code 3: RuntimeError: shape mismatch in layer 4 (64 vs 32)"
    )
    assert run.result["stderr_tail"][-2:] == [
        "loading shard 7 of 9",
        "RuntimeError: shape mismatch in layer 4 (64 vs 32)",
    ]
    (inc,) = incidents(store, run_id)
    assert inc.rule == "exit" and inc.evidence["exit_code"] == 3


async def test_job_killed_by_a_signal_fails_naming_the_signal(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(make_spec(job("killed.py")))
    run = await finish(sup, run_id)

    assert run.status == "failed"
    assert run.exit_code == -9  # the command's status, not its wrapper's 137
    assert run.summary == "failed: killed by SIGKILL: allocating 48 GB for the embedding table"
    (inc,) = incidents(store, run_id)
    assert inc.rule == "exit" and inc.evidence["exit_code"] == -9


async def test_waiting_for_a_run_that_already_ended_returns_its_final_row(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(make_spec(job("crash.py")))
    await await_for(lambda: get_run(store, run_id).status == "failed", what="run over")
    await await_for(lambda: sup.running() == [], what="watch over")

    run = await finish(sup, run_id)  # e.g. `harness run` or the API asking late

    assert run.id == run_id and run.status == "failed" and run.exit_code == 3


# -- garbage in the metrics stream -------------------------------------------------------


async def test_garbage_partial_and_huge_lines_are_counted_and_warned_once(
    sup: Supervisor, store: Store, notes: Notes
) -> None:
    spec = make_spec(
        job("steady.py", "--seconds", 1.5, "--garbage", "--end", "score=1"),
        gates={"score": ">= 0.9"},
    )

    run_id = await sup.launch(spec)
    run = await finish(sup, run_id)

    assert run.status == "succeeded", run.summary
    progress = run.result["progress"]
    assert progress["garbage"] == 4  # text, a JSON array, bad UTF-8, "{{{"
    assert progress["oversized"] == 1  # the 1.5 MB line
    warnings = [t for t in notes.texts() if "metrics.jsonl" in t]
    assert len(warnings) == 1, notes.items
    assert "unreadable line(s) skipped: not json at all" in warnings[0]
    assert incidents(store, run_id) == []


# -- abort from another process ----------------------------------------------------------


async def test_abort_request_written_by_another_process_stops_the_run(
    sup: Supervisor, store: Store, tmp_path: Path, reaper: Reaper
) -> None:
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    spec = make_spec(job("steady.py", "--ready", ready, "--checkpoint", ckpt))
    run_id = await sup.launch(spec)
    await await_for(ready.exists, what="job ready")

    # Another process writes the request into the database, as `harness abort` does.
    code = (
        "import sys, mistakes, memory\n"
        "store = mistakes.open_log(sys.argv[1])\n"
        "with store.write() as s:\n"
        "    row = s.get(memory.Run, sys.argv[2])\n"
        "    row.abort_requested, row.abort_by = 'from elsewhere', 'other'\n"
        "    s.add(row)\n"
    )
    other = reaper.popen([sys.executable, "-c", code, str(store.path), run_id])
    assert await asyncio.to_thread(other.wait, 30) == 0
    run = await finish(sup, run_id)

    assert run.status == "aborted"
    assert run.summary == "aborted: abort requested by other: from elsewhere"
    assert ckpt.read_text().startswith("step ")  # SIGINT first: the job could checkpoint
    assert run.exit_code == 0


async def test_a_job_never_sees_the_discord_secrets(
    sup: Supervisor, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_DISCORD_TOKEN", "secret-bot-token-123456")
    monkeypatch.setenv("HARNESS_DISCORD_WEBHOOK_URL", "https://example.invalid/hook/secret")
    out = tmp_path / "env.txt"
    code = "import os, sys; open(sys.argv[1], 'w').write(repr(sorted(os.environ)))"
    spec = make_spec([sys.executable, "-c", code, str(out)])
    run = await finish(sup, await sup.launch(spec))
    seen = out.read_text()
    assert "HARNESS_RUN_ID" in seen and "HARNESS_METRICS" in seen
    assert "HARNESS_DISCORD_TOKEN" not in seen and "HARNESS_DISCORD_WEBHOOK_URL" not in seen
    assert run.status == "succeeded"


# -- hostile input and a failing store (issue 10) ----------------------------------------


def _strict(text: str) -> object:
    """``text`` parsed as strict JSON: NaN and Infinity are refused, as other readers do."""

    def refuse(token: str) -> object:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _raw_row(store: Store, run_id: str) -> tuple[str, str, str]:
    with sqlite3.connect(store.path) as db:
        row = db.execute(
            "SELECT progress, result, spec FROM run WHERE id = ?", (run_id,)
        ).fetchone()
    assert row is not None
    return row


def _fallback(run: Run) -> list[dict[str, Any]]:
    text = (Path(run.run_dir) / "supervisor-fallback.jsonl").read_text(encoding="utf-8")
    return [_strict(line) for line in text.splitlines()]  # type: ignore[misc]


class FlakyStore:
    """The store's writes refuse (as a full disk does) while ``failing`` is set."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = store.write
        self.failing = False
        self.refused = 0
        monkeypatch.setattr(store, "write", self.write)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        if self.failing:
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        with self.real() as s:
            yield s


async def test_metric_of_1e999_and_lone_surrogates_are_stored_and_inf_loss_aborts(
    sup: Supervisor, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = await sup.launch(make_spec(job("hostile_metrics.py")))
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    assert run.summary == "aborted: loss is inf at step 3"
    (inc,) = incidents(store, run_id)
    assert inc.rule == "nonfinite" and inc.evidence["value"] == "inf"
    inf_line = _metric_lines(run)[-1]
    assert isinstance(inf_line["t"], float)
    assert 0 <= inc.ts - inf_line["t"] < 1.0  # the usual window
    progress, result, _spec = (_strict(text) for text in _raw_row(store, run_id))
    assert isinstance(progress, dict) and isinstance(result, dict)
    assert progress == result["progress"]  # the row keeps the final progress, strict JSON
    metrics = progress["metrics"]
    assert metrics["big"] == "inf"  # kept as text: strict JSON, and still a number to us
    assert metrics["\ufffdkey"] == 2.5  # the key's lone surrogate replaced
    assert result["final"]["loss"] == "inf"
    assert not (Path(run.run_dir) / "supervisor-fallback.jsonl").exists()
    assert "harness:" not in capsys.readouterr().err  # nothing degraded
    assert stat.S_IMODE(os.stat(run.run_dir).st_mode) == 0o700  # private run dir


async def test_fifo_in_place_of_the_metrics_file_is_an_incident_and_the_stall_rule_fires(
    sup: Supervisor, store: Store
) -> None:
    stall = 1.5
    run_id = await sup.launch(make_spec(job("bad_metrics.py", "fifo"), watch={"stall_s": stall}))
    run = await finish(sup, run_id)  # a blocking open of the FIFO would hang here

    assert run.status == "aborted", run.summary
    assert stat.S_ISFIFO(os.lstat(Path(run.run_dir) / "metrics.jsonl").st_mode)
    by_rule = {i.rule: i for i in incidents(store, run_id)}
    assert sorted(by_rule) == ["metrics_file", "stall"]
    found, stalled = by_rule["metrics_file"], by_rule["stall"]
    assert found.severity == "warn" and found.ts < stalled.ts
    assert found.summary == (
        "metrics.jsonl is a FIFO; no metrics are read from it (the stall rule still applies)"
    )
    assert stalled.rule == "stall" and stalled.evidence["silent_s"] > stall


async def test_symlink_out_of_the_run_dir_is_not_read_and_abort_still_works(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(make_spec(job("bad_metrics.py", "symlink", "/etc/passwd")))
    await await_for(
        lambda: any(i.rule == "metrics_file" for i in incidents(store, run_id)), what="incident"
    )
    await sup.request_abort(run_id, "test: enough", by="test")
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    found = next(i for i in incidents(store, run_id) if i.rule == "metrics_file")
    assert found.summary.startswith("metrics.jsonl is a symlink to /etc/passwd;")
    assert found.evidence["found"] == "a symlink to /etc/passwd"
    assert run.result["progress"]["lines"] == 0  # not one line of /etc/passwd was read
    assert run.result["progress"]["garbage"] == 0


async def test_job_that_deletes_its_run_dir_is_reported_as_such_not_as_an_exit_code(
    sup: Supervisor, store: Store
) -> None:
    run_id = await sup.launch(make_spec(job("rm_run_dir.py")))
    run = await finish(sup, run_id)

    assert not Path(run.run_dir).exists()
    assert run.status == "failed"
    assert run.exit_code == 0
    assert run.summary == (
        f"failed: the run directory {run.run_dir} vanished while the job ran; its exit status was 0"
    )
    (inc,) = incidents(store, run_id)
    assert inc.rule == "run_dir" and inc.evidence == {
        "run_dir": run.run_dir,
        "exit_code": 0,
        "mistake_ids": [],
    }


async def test_nan_abort_comes_while_the_store_fails_and_the_row_lands_once_it_is_back(
    sup: Supervisor,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flaky = FlakyStore(store, monkeypatch)
    run_id = await sup.launch(make_spec(job("nan_loss.py")))
    pid = get_run(store, run_id).pid
    assert pid is not None
    flaky.failing = True

    run = await finish(sup, run_id)  # what the supervisor knows: the store has none of it

    assert run.status == "aborted", run.summary
    assert run.summary == "aborted: loss is nan at step 5"
    assert gone(pid)
    assert get_run(store, run_id).status == "running"  # the store still refuses
    kept = _fallback(run)
    (inc,) = [k for k in kept if k["what"] == "record an incident"]
    assert inc["record"]["rule"] == "nonfinite"
    assert inc["error"] == "OperationalError: database or disk is full"
    nan_line = next(r for r in _metric_lines(run) if r.get("loss") == "nan")
    assert 0 <= inc["record"]["ts"] - nan_line["t"] < 1.0  # decided in the usual window
    err = capsys.readouterr().err
    assert f"harness: run {run_id}: could not " in err
    assert " in the store: OperationalError: database or disk is full; kept in " in err
    assert len(err.splitlines()) == 1, err  # rate-limited: not one line per failed write

    flaky.failing = False
    await await_for(
        lambda: get_run(store, run_id).status == "aborted", timeout=20, what="the final row"
    )
    stored = get_run(store, run_id)
    assert stored.summary == run.summary and stored.exit_code == run.exit_code
    assert "recorded after all" in capsys.readouterr().err


async def test_abort_from_this_process_works_while_the_store_fails(
    sup: Supervisor, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    flaky = FlakyStore(store, monkeypatch)
    run_id = await sup.launch(make_spec(job("steady.py", "--ready", ready, "--checkpoint", ckpt)))
    await await_for(ready.exists, what="job ready")
    flaky.failing = True

    await sup.request_abort(run_id, "Ctrl-C at the terminal", by="terminal")  # no raise
    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    assert run.summary == "aborted: abort requested by terminal: Ctrl-C at the terminal"
    assert ckpt.read_text().startswith("step ")  # SIGINT first: the job could checkpoint
    assert flaky.refused > 0


async def test_store_failing_past_the_bound_stops_the_job_gracefully_with_the_reason(
    sup: Supervisor,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sup.guard = GuardConfig(give_up_s=1.0, backoff_s=0.01)
    ready, ckpt = tmp_path / "ready", tmp_path / "ckpt"
    flaky = FlakyStore(store, monkeypatch)
    run_id = await sup.launch(make_spec(job("steady.py", "--ready", ready, "--checkpoint", ckpt)))
    await await_for(ready.exists, what="job ready")
    flaky.failing = True

    run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    assert run.summary.startswith(
        f"aborted: supervision cannot continue: the store {store.path} has failed for "
    )
    assert run.summary.endswith(" s (limit 1 s)")
    assert ckpt.read_text().startswith("step ")  # stopped gracefully: SIGINT first
    reasons = [k for k in _fallback(run) if k["what"] == "stopping the job"]
    assert len(reasons) == 1 and reasons[0]["error"] in run.summary
    assert f"run {run_id}: stopping the job: the store {store.path} has failed" in (
        capsys.readouterr().err
    )
    flaky.failing = False
    await await_for(lambda: get_run(store, run_id).status == "aborted", timeout=20, what="row")
    assert get_run(store, run_id).summary == run.summary


async def test_an_iteration_that_raises_is_logged_once_and_watching_goes_on(
    sup: Supervisor,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def boom(self: CpuProbe) -> None:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(CpuProbe, "sample", boom)
    spec = make_spec(
        job("steady.py", "--seconds", 1.5, "--end", "score=1"), gates={"score": ">= 0.9"}
    )
    run = await finish(sup, await sup.launch(spec))

    assert run.status == "succeeded", run.summary
    logged = [r for r in caplog.records if r.name == "harness.supervisor"]
    assert len(logged) == 1 and "RuntimeError: probe exploded" in logged[0].getMessage()
    err = capsys.readouterr().err
    assert err.count("an error in the watch loop: RuntimeError: probe exploded") == 1
    assert len(_fallback(run)) >= 3  # every failed iteration is kept, one line each


async def test_launch_is_refused_in_one_line_when_the_run_cannot_be_recorded(
    sup: Supervisor, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyStore(store, monkeypatch)
    flaky.failing = True
    ran = tmp_path / "ran"

    with pytest.raises(LaunchRefused) as refused:
        await sup.launch(make_spec(job("steady.py", "--seconds", 0.5, "--touch", ran)))

    assert str(refused.value) == (
        f"refused: cannot record the run in {store.path}: "
        "OperationalError: database or disk is full"
    )
    assert flaky.refused == 1 + sup.guard.retries  # retried before refusing
    await asyncio.sleep(0.5)
    assert not ran.exists()  # nothing runs unrecorded
    assert sup.running() == []


# -- GPU jobs through a fake NVML (tests/fakes/nvml.py, specified against pynvml) --------


@contextlib.asynccontextmanager
async def gpu_supervisor(
    store: Store, settings: Any, notes: Notes, reaper: Reaper, fake: Any
) -> Any:
    """A supervisor whose GPU probe reads ``fake``; every process it started is reaped."""
    from harness.runtime.probes import GpuProbe

    s = Supervisor(store, settings.paths.runs_dir, notify=notes, gpu=GpuProbe(fake))
    try:
        yield s
    finally:
        reaper.cleanup()
        await s.close()


GPU_WATCH = {"min_util": 0.5, "util_grace_s": 1.0, "util_window_s": 2.0}


async def _status_line(
    store: Store,
    settings: Any,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """``harness status RUN`` once the running job's progress shows its GPU's SM activity."""
    from harness.cli.main import main

    def judged_on_sm_activity() -> bool:  # GPM gives SM activity from its second reading
        gpus = (get_run(store, run_id).progress or {}).get("gpus") or []
        return bool(gpus) and gpus[0]["source"] == "sm_activity"

    await await_for(judged_on_sm_activity, 10)
    monkeypatch.setenv("HARNESS_HOME", str(settings.paths.home))
    capsys.readouterr()
    assert main(["status", run_id]) == 0
    return capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("attributed", [True, False])
async def test_a_gpu_job_at_high_sm_activity_and_low_cpu_is_judged_by_its_gpu(
    store: Store,
    settings: Any,
    notes: Notes,
    reaper: Reaper,
    attributed: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.fakes.nvml import FakeNvml

    fake = FakeNvml(count=2)
    fake.compute_pids = {0: [], 1: []}
    fake.graphics_pids = {0: [], 1: []}
    fake.util_percent, fake.sm_util_percent = {0: 99, 1: 0}, {0: 97.0}
    async with gpu_supervisor(store, settings, notes, reaper, fake) as sup:
        spec = make_spec(job("gpu_like.py", 5), device="auto", watch=GPU_WATCH)
        run_id = await sup.launch(spec)
        if attributed:  # the job's process holds a context on GPU 0, as torch would
            pid = get_run(store, run_id).pid
            assert pid is not None
            fake.compute_pids[0] = [pid]
            shown = await _status_line(store, settings, run_id, monkeypatch, capsys)
        run = await finish(sup, run_id)

    progress = run.result["progress"]
    assert progress["cpu_util"] is not None and progress["cpu_util"] < 0.5  # a sleepy CPU
    if not attributed:  # without a GPU context the same job is a CPU job, and idle
        assert run.status == "aborted", run.summary
        (inc,) = incidents(store, run_id)
        assert inc.rule == "utilisation"
        assert "device cpu, no GPU context after the grace period" in inc.summary
        return
    assert run.status == "succeeded", run.summary
    assert incidents(store, run_id) == []
    assert (progress["device"], progress["device_by"]) == ("cuda:0", "attributed by NVML")
    [gpu] = progress["gpus"]
    assert (gpu["index"], gpu["source"], gpu["busy"]) == (0, "sm_activity", 0.97)
    # while it ran, harness status showed the device as resolved and the GPU as judged
    assert "  cuda:0 (attributed by NVML)  GPU0 97% SM (util 99%) 3.0/80.0 GB  " in shown


async def test_one_idle_gpu_of_four_is_warned_then_aborted_naming_it(
    store: Store, settings: Any, notes: Notes, reaper: Reaper
) -> None:
    from tests.fakes.nvml import FakeNvml

    fake = FakeNvml(count=4)
    fake.compute_pids = {i: [] for i in range(4)}
    fake.graphics_pids = {i: [] for i in range(4)}
    fake.util_percent = dict.fromkeys(range(4), 100)  # a kernel always runs on each
    fake.sm_util_percent = {0: 97.0, 1: 4.0, 2: 96.0, 3: 98.0}  # GPU 1's SMs idle
    async with gpu_supervisor(store, settings, notes, reaper, fake) as sup:
        spec = make_spec(job("gpu_like.py", 60), device="cuda", watch=GPU_WATCH)
        run_id = await sup.launch(spec)
        pid = get_run(store, run_id).pid
        assert pid is not None
        fake.compute_pids = {i: [pid] for i in range(4)}  # one rank per GPU
        run = await finish(sup, run_id)

    assert run.status == "aborted", run.summary
    (inc,) = incidents(store, run_id)
    assert inc.rule == "utilisation" and inc.mistake_id == "M-015"
    assert (inc.evidence["gpu"], inc.evidence["source"]) == (1, "sm_activity")
    assert inc.evidence["figure"] == pytest.approx(0.04)
    assert inc.evidence["low_gpus"] == [1]
    assert inc.summary.startswith("GPU 1 at 4 % SM activity over 2 s, threshold 50 % (")
    assert "device cuda:0,1,2,3, from the spec" in inc.summary
    # the early warning, an alert, came before the abort's
    texts = notes.texts()
    warned = next(i for i, t in enumerate(texts) if "warning: GPU 1 at 4 % SM activity" in t)
    aborting = next(i for i, t in enumerate(texts) if ": aborting: GPU 1 at 4 %" in t)
    assert warned < aborting
    assert notes.items[warned][1] is True
    assert "for 1 s (threshold 50 %); aborting in 1 s unless it recovers" in texts[warned]


async def test_a_cuda_launch_is_refused_when_nvml_cannot_read_the_gpus(
    store: Store, settings: Any, notes: Notes, reaper: Reaper, tmp_path: Path
) -> None:
    import pynvml

    from tests.fakes.nvml import FakeNvml

    ran = tmp_path / "ran"
    fake = FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    async with gpu_supervisor(store, settings, notes, reaper, fake) as sup:
        spec = make_spec(job("steady.py", "--seconds", 0.5, "--touch", ran), device="cuda")
        with pytest.raises(LaunchRefused) as refused:
            await sup.launch(spec)
        await asyncio.sleep(0.5)
    assert not ran.exists()  # the job never started
    assert "GPU probe: cuda needs readable GPU utilisation and NVML could not start" in str(
        refused.value
    )
    with store.read() as session:
        [row] = session.exec(select(Run)).all()
    assert row.status == "failed"
    (inc,) = incidents(store, row.id)
    assert inc.rule == "gpu_probe" and inc.mistake_id == "M-015"
    assert "Driver Not Loaded" in inc.summary
    assert any("launch refused" in t and "GPU probe" in t for t in notes.texts())


async def test_an_optional_gpu_probe_runs_the_job_unjudged_with_one_warning(
    store: Store, settings: Any, notes: Notes, reaper: Reaper
) -> None:
    import pynvml

    from tests.fakes.nvml import FakeNvml

    fake = FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    async with gpu_supervisor(store, settings, notes, reaper, fake) as sup:
        watch = {**GPU_WATCH, "util_window_s": 1.0, "gpu_probe": "optional"}
        spec = make_spec(job("gpu_like.py", 3), device="cuda", watch=watch)
        run = await finish(sup, await sup.launch(spec))

    assert run.status == "succeeded", run.summary
    (inc,) = incidents(store, run.id)
    assert inc.rule == "gpu_probe" and inc.severity == "warn"
    assert inc.summary.startswith("no readable GPU utilisation for 1 s on cuda: NVML could not")
    [check] = [c for c in run.result["checks"] if c["name"] == "GPU probe"]
    assert check["passed"] is True and "runs unjudged" in check["evidence"]


# -- a job's own alerts ------------------------------------------------------------------


async def test_a_jobs_own_alerts_become_incidents_and_immediate_messages(
    sup: Supervisor, store: Store, notes: Notes
) -> None:
    run_id = await sup.launch(make_spec(job("alerts.py")))
    run = await finish(sup, run_id)

    assert run.status == "succeeded", run.summary
    found = incidents(store, run_id)
    by_text = {i.evidence["text"][:20]: i for i in found}
    info = by_text["validation set has 0"]
    assert (info.rule, info.severity, info.mistake_id) == ("job_alert", "info", None)
    vocab = by_text["FAIL vocab_size: tok"]
    # an alert naming a model check is filed under it, and so linked to its mistake
    assert (vocab.rule, vocab.severity, vocab.mistake_id) == ("vocab_size", "warn", "M-026")
    assert vocab.evidence["rows"] == 256
    hostile = next(i for i in found if i.evidence["text"].startswith("@everyone line two"))
    assert hostile.severity == "error" and len(hostile.evidence["text"]) == 300
    assert "\n" not in hostile.summary and "\x1b" not in hostile.summary
    # a job cannot file an incident under a supervisor rule
    assert by_text["pretending to be a N"].rule == "job_alert"
    # a burst of five, then held back: the loop's first alert went out, the rest did not
    assert len(found) == 5 and "loop alert 0" in by_text
    alerts = [(t, a) for t, a in notes.items if "job alert" in t]
    assert len(alerts) == 5 and all(a for _, a in alerts)  # each one sent at once
    assert alerts[1][0] == (
        f"e2e: job alert (warn): FAIL vocab_size: token id 259 >= 256 embedding rows [{run_id}]"
    )
