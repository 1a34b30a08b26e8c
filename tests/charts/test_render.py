"""The renderer child: a description in, a small valid PNG out; what it draws from; and
the daemon side never loading matplotlib or numpy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.runtime.chart import (
    CHART_COMMAND,
    ChartRenderer,
    describe,
    load_series,
)
from tests.charts.conftest import check_png, write_run_dir

ROOT = Path(__file__).resolve().parents[2]


def _desc(run_dir: Path, **extra: object) -> dict[str, object]:
    desc = describe(
        run_id="echo-1",
        name="echo",
        status="running",
        run_dir=str(run_dir),
        key_metric="acc",
        device="cuda:0",
        started_at=None,
        incidents=[(time.time() - 150, "utilisation", "warn")],
    )
    return {**desc, **extra}


def _child(stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(CHART_COMMAND), input=stdin, capture_output=True, timeout=60, cwd=ROOT
    )


def test_the_child_writes_a_small_valid_png(tmp_path: Path) -> None:
    write_run_dir(tmp_path / "run")
    proc = _child(json.dumps(_desc(tmp_path / "run")).encode())
    assert proc.returncode == 0, proc.stderr.decode()
    assert check_png(proc.stdout) == (800, 500)


def test_a_long_run_is_thinned_and_its_markers_land_on_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    t0 = write_run_dir(run_dir, steps=50_000)
    series = load_series(_desc(run_dir, incidents=[{"t": t0 + 25_000.5, "rule": "stall"}]))
    assert 750 <= len(series.steps) <= 1501  # thinned, spread over the whole run
    assert series.steps[0] == 0 and series.steps[-1] == 49_999  # first and last kept
    assert series.key_metric == "acc" and all(k is not None for k in series.key)
    [marker] = series.markers
    assert marker.rule == "stall" and marker.step is not None
    assert 25_000 - 100 <= marker.step <= 25_000  # the step trained then (as thinned)
    assert list(series.util) == ["GPU 0"]  # a GPU job: one line per GPU
    assert abs(marker.t - 25_000.5) < 1  # seconds since the start of the run
    proc = _child(json.dumps(_desc(run_dir)).encode())
    assert proc.returncode == 0, proc.stderr.decode()
    check_png(proc.stdout)


def test_a_cpu_job_shows_its_cpu_figure(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "util.jsonl").write_text('{"t": 1.0, "cpu": 0.5}\n{"t": 11.0, "cpu": 0.75}\n')
    series = load_series(_desc(run_dir, device="cpu"))
    assert series.util == {"CPU": [0.5, 0.75]} and series.util_t == [0.0, 10.0]
    assert series.steps == []  # no metrics file: an empty upper panel, not an error


def test_hostile_run_dirs_read_as_no_points(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "metrics.jsonl")  # would block a reader that opened it
    (tmp_path / "secret.jsonl").write_text('{"t": 1.0, "cpu": 0.5}\n')
    (run_dir / "util.jsonl").symlink_to(tmp_path / "secret.jsonl")
    series = load_series(_desc(run_dir))
    assert series.steps == [] and series.util_t == []


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [(b"{nope", "not JSON"), (b"[1, 2]", "must be a JSON object")],
)
def test_bad_input_is_one_line_and_exit_2(stdin: bytes, needle: str) -> None:
    proc = _child(stdin)
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode()
    assert needle in err and err.count("\n") == 1


def test_the_daemon_side_never_loads_matplotlib_or_numpy(tmp_path: Path) -> None:
    """The service renders through the child; this process imports neither."""
    write_run_dir(tmp_path / "run")
    code = (
        "import asyncio, json, sys\n"
        "import harness.daemon.service, harness.daemon.serve, harness.runtime.watch\n"
        "from harness.runtime.chart import ChartRenderer\n"
        f"desc = json.loads({json.dumps(json.dumps(_desc(tmp_path / 'run')))})\n"
        "png = asyncio.run(ChartRenderer(timeout_s=60).render(desc))\n"
        "assert png is not None and png.startswith(b'\\x89PNG'), png\n"
        "loaded = [m for m in ('matplotlib', 'numpy', 'torch') if m in sys.modules]\n"
        "print(json.dumps(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


async def test_a_failing_renderer_answers_none_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = ChartRenderer(command=[sys.executable, "-c", "import sys; sys.exit('boom')"])
    with caplog.at_level(logging.DEBUG, logger="harness.charts"):
        assert await failing.render({"run_dir": str(tmp_path)}) is None
        assert await failing.render({"run_dir": str(tmp_path)}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "exit 1" in warnings[0].getMessage()
    assert "boom" in warnings[0].getMessage()


async def test_a_renderer_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    slow = ChartRenderer(timeout_s=1.0, command=[sys.executable, "-c", code])
    assert await slow.render({}) is None
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left behind


async def test_a_renderer_that_prints_no_png_is_refused() -> None:
    liar = ChartRenderer(command=[sys.executable, "-c", "print('hello')"])
    assert await liar.render({}) is None
    with pytest.raises(Exception, match="not a PNG"):
        await liar.render_or_raise({})
