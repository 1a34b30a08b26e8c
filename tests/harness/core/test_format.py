"""The status line pieces: durations, trends, sparklines and the whole progress line."""

from __future__ import annotations

import math
from typing import Any

import pytest

from harness.core.format import duration, gb, percent, progress_line, sparkline, trend

GIB = 1024**3


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.4, "59s"),
        (59.6, "1m00s"),
        (150, "2m30s"),
        (3599.6, "1h00m"),
        (3 * 3600 + 5 * 60 + 59, "3h05m"),
        (None, "?"),
        (math.inf, "?"),
        (math.nan, "?"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_percent_and_gb() -> None:
    assert percent(0.873) == "87%"
    assert percent(None) == "-"
    assert gb(int(1.5 * GIB)) == "1.5 GB"
    assert gb(None) == "-"


@pytest.mark.parametrize(
    ("values", "arrow"),
    [
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "↓"),
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "↑"),
        ([0.5, 0.501, 0.5, 0.499, 0.5, 0.5], "→"),
        ([0.0] * 9, "→"),
        ([-1.0, -1.0, -1.5, -1.5, -2.0, -2.0], "↓"),
        ([1.0, 0.5, 0.2], ""),  # too few points to call a trend
    ],
)
def test_trend(values: list[float], arrow: str) -> None:
    assert trend(values) == arrow


def test_sparkline_spans_the_bars_and_keeps_the_last_points() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline(list(range(100)), width=5) == "▁▃▅▆█"  # 95..99
    assert sparkline([0.5, 0.5, 0.5]) == "▄▄▄"
    assert sparkline([]) == ""


def test_sparkline_skips_nonfinite_points_and_survives_huge_ranges() -> None:
    assert sparkline([math.nan, 0.0, math.inf, 1.0]) == "▁█"
    assert sparkline([1e308, -1e308]) == "█▁"


def cpu_snapshot(**kw: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "phase": "train",
        "device": "cpu",
        "step": 120,
        "total_steps": 600,
        "rate": 3.2,
        "eta_s": 150.0,
        "metrics": {"loss": 0.2134, "avg_bit_acc": 0.61},
        "loss_history": [0.9, 0.8, 0.6, 0.4, 0.3, 0.2],
        "key_history": [0.1, 0.3, 0.61],
        "cpu_util": 0.93,
        "gpu_busy": None,
        "ram_available": 12 * GIB,
        "vram_used": None,
        "vram_total": None,
    }
    snap.update(kw)
    return snap


def test_progress_line_for_a_cpu_job() -> None:
    line = progress_line("echo", "running", cpu_snapshot(), "avg_bit_acc")
    assert line == (
        "echo  running  step 120/600 (20%)  3.20 it/s  ETA 2m30s  loss 0.2134↓  "
        "avg_bit_acc 0.61 ▁▄█  CPU 93%  RAM free 12.0 GB"
    )


def test_progress_line_for_a_cuda_job() -> None:
    snap = cpu_snapshot(
        device="cuda:0",
        rate=42.0,
        eta_s=4000,
        gpu_busy=0.07,
        vram_used=6 * GIB,
        vram_total=24 * GIB,
        phase="eval",
    )
    line = progress_line("echo", "aborting", snap, None)
    assert line == (
        "echo  aborting  step 120/600 (20%)  42 it/s  ETA 1h06m  loss 0.2134↓  "
        "GPU 7%  VRAM 6.0 GB/24.0 GB  RAM free 12.0 GB  [eval]"
    )
    assert "CPU" not in line


def test_progress_line_before_anything_is_known() -> None:
    empty = {"device": "cuda", "metrics": {}}
    assert progress_line("x", "starting", empty, "acc") == "x  starting  GPU -  RAM free -"
    assert (
        progress_line("x", "running", {"step": 3}, None) == "x  running  step 3  CPU -  RAM free -"
    )


def test_progress_line_shows_the_device_as_resolved_and_the_judged_cpu_figure() -> None:
    snap = cpu_snapshot(
        device="cpu",
        device_by="no GPU context after the grace period",
        cpu_util=0.31,
        util=0.98,
        util_source="running + waiting",
    )
    line = progress_line("echo", "running", snap, None)
    assert "  cpu (no GPU context after the grace period)  " in line
    assert "  CPU 98% incl. waiting (running 31%)  " in line
    plain = cpu_snapshot(util=0.31, util_source="running")
    assert "  CPU 31%  " in progress_line("echo", "running", plain, None)


def test_progress_line_shows_each_gpu_with_its_judged_figure_and_memory() -> None:
    gpus = [
        {
            "index": 0,
            "busy": 0.97,
            "source": "sm_activity",
            "util": 1.0,
            "sm_activity": 0.97,
            "mem_used": 3 * GIB,
            "mem_total": 80 * GIB,
        },
        {
            "index": 1,
            "busy": 0.04,
            "source": "sm_activity",
            "util": 1.0,
            "sm_activity": 0.04,
            "mem_used": 78 * GIB,
            "mem_total": 80 * GIB,
        },
        {
            "index": 2,
            "busy": 0.5,
            "source": "util",
            "util": 0.5,
            "sm_activity": None,
            "mem_used": None,
            "mem_total": None,
        },
    ]
    snap = cpu_snapshot(device="cuda:0,1,2", device_by="attributed by NVML", gpus=gpus)
    line = progress_line("echo", "running", snap, None)
    assert line.endswith(
        "cuda:0,1,2 (attributed by NVML)  GPU0 97% SM (util 100%) 3.0/80.0 GB  "
        "GPU1 4% SM (util 100%) 78.0/80.0 GB  GPU2 50% util  RAM free 12.0 GB"
    )
    assert "CPU" not in line


def test_the_ranks_of_a_job_and_a_straggler_among_them() -> None:
    def line(ranks: Any) -> str:
        return progress_line("ddp", "running", {"step": 10, "ranks": ranks}, None)

    even = [{"rank": 0, "step": 10, "rate": 2.3}, {"rank": 1, "step": 10, "rate": 2.1}]
    assert "  ranks 2: 2.10-2.30 it/s" in line(even)
    assert "⚠" not in line(even)
    slow = [*even, {"rank": 2, "step": 6, "rate": 0.9}, {"rank": 3, "step": 10, "rate": 2.3}]
    assert "  ranks 4: 0.90-2.30 it/s, ⚠ rank 2 at 0.90 it/s (39% of the fastest)" in line(slow)
    # one rank, no rates yet, or rates that are not numbers: nothing misleading
    assert "ranks" not in line(even[:1])
    unknown = [{"rank": 0, "rate": None}, {"rank": 1, "rate": "fast"}, {"rank": 2, "rate": True}]
    assert "  ranks 3" in line(unknown) and "it/s" not in line(unknown).split("ranks")[1]
    assert "ranks" not in line("garbage")
