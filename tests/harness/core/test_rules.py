"""The checklist rules as pure functions: verdicts, evidence numbers and summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from harness.core.devices import GpuReading
from harness.core.rules import (
    UtilSample,
    check_gates,
    check_gpu_memory,
    check_gpu_probe,
    check_gpu_readable,
    check_metrics_file,
    check_nonfinite,
    check_ram,
    check_stall,
    check_utilisation,
    warn_utilisation,
)
from harness.core.spec import WatchConfig, parse_gate

GIB = 1024**3
CFG = WatchConfig(min_util=0.8, util_grace_s=10, util_window_s=30, stall_s=120)


def samples(
    utils: Sequence[float | None], *, start: float = 0.0, every: float = 1.0, phase: str = "train"
) -> list[UtilSample]:
    return [UtilSample(start + i * every, u, phase) for i, u in enumerate(utils)]


def util_at(
    ss: list[UtilSample], now: float, *, device: str = "cpu", cfg: WatchConfig = CFG
) -> Any:
    return check_utilisation(ss, now=now, started_at=0.0, cfg=cfg, device=device)


# -- RAM ----------------------------------------------------------------------------------


def test_ram_ok_above_the_minimum() -> None:
    f = check_ram(6 * GIB, WatchConfig(min_ram_free_gb=4), before_launch=True)
    assert f.level == "ok"
    assert f.evidence == {"free_gb": 6.0, "min_ram_free_gb": 4.0}


@pytest.mark.parametrize(("before", "when"), [(True, "before launch"), (False, "while running")])
def test_ram_abort_below_the_minimum_with_numbers(before: bool, when: str) -> None:
    f = check_ram(int(1.5 * GIB), WatchConfig(min_ram_free_gb=4), before_launch=before)
    assert f.level == "abort"
    assert f.summary == f"RAM 1.5 GB free {when}, minimum 4 GB"
    assert f.evidence == {"free_gb": 1.5, "min_ram_free_gb": 4.0}
    assert f.mistake_ids == ("M-030",)


# -- utilisation --------------------------------------------------------------------------


def test_no_utilisation_verdict_during_grace_plus_window() -> None:
    ss = samples([0.05] * 40)
    assert util_at(ss, now=39.0) is None  # grace 10 + window 30 = 40
    assert util_at(ss, now=40.0) is not None


def test_low_utilisation_in_train_phase_aborts_with_evidence() -> None:
    ss = samples([0.06] * 45)
    f = util_at(ss, now=44.0)
    assert f.level == "abort"
    assert f.rule == "utilisation"
    assert f.summary == "CPU 6 % over 30 s, threshold 80 %"
    assert f.evidence["mean_util"] == pytest.approx(0.06)
    assert f.evidence["threshold"] == 0.8
    assert f.evidence["window_s"] == 30
    assert f.evidence["samples"] == 31
    assert f.mistake_ids == ("M-015", "M-035")


def test_high_utilisation_is_ok() -> None:
    f = util_at(samples([0.95] * 45), now=44.0)
    assert f.level == "ok"
    assert f.summary == "CPU 95 % over 30 s, threshold 80 %"


def test_the_mean_decides_not_one_sample() -> None:
    dip = [0.95] * 45
    dip[40] = 0.0  # one idle second in the window
    assert util_at(samples(dip), now=44.0).level == "ok"


def test_gpu_wording_for_cuda_devices() -> None:
    f = util_at(samples([0.2] * 45), now=44.0, device="cuda:1")
    assert f.summary == "GPU 20 % over 30 s, threshold 80 %"
    assert f.evidence["device"] == "cuda:1"


def test_an_eval_sample_in_the_window_prevents_a_verdict() -> None:
    ss = samples([0.05] * 45)
    ss[30] = UtilSample(30.0, 0.0, "eval")
    assert util_at(ss, now=44.0) is None


def test_a_window_that_starts_right_after_eval_gives_no_verdict() -> None:
    ss = samples([0.0] * 14, phase="eval") + samples([0.05] * 31, start=14.0)
    assert util_at(ss, now=44.0) is None  # the sample before the window was eval
    assert util_at(ss, now=45.0).level == "abort"  # one second later it is all train


def test_no_verdict_when_the_window_is_not_covered() -> None:
    late = samples([0.05] * 5, start=40.0)  # samples only for the last 4 s of the window
    assert util_at(late, now=44.0) is None


def test_no_verdict_with_fewer_than_two_samples_or_values() -> None:
    assert util_at(samples([0.05], start=44.0), now=44.0) is None
    assert util_at(samples([None] * 44 + [0.05]), now=44.0) is None  # GPU absent: None
    assert util_at([], now=44.0) is None


def test_samples_older_than_the_window_do_not_count() -> None:
    busy_then_idle = samples([1.0] * 60 + [0.1] * 31)
    f = util_at(busy_then_idle, now=90.0)
    assert f.level == "abort"
    assert f.evidence["max_util"] == pytest.approx(0.1)


def test_cpu_summary_names_the_figure_and_how_the_device_was_resolved() -> None:
    ss = [UtilSample(float(i), 0.06, "train", (), "running + waiting") for i in range(45)]
    f = check_utilisation(
        ss, now=44.0, started_at=0.0, cfg=CFG, device="cpu", how="no GPU context after the grace"
    )
    assert f is not None and f.level == "abort"
    assert f.summary == (
        "CPU 6 % over 30 s, threshold 80 % (running incl. waiting for a CPU; "
        "device cpu, no GPU context after the grace)"
    )
    assert f.evidence["source"] == "running + waiting"
    assert f.evidence["figure"] == f.evidence["mean_util"] == pytest.approx(0.06)


# -- per-GPU judgement -------------------------------------------------------------------


def gpu_samples(
    busy: dict[int, float], n: int = 45, *, source: str = "sm_activity", util: float = 1.0
) -> list[UtilSample]:
    """``n`` one-second samples of GPUs at fixed figures (SM activity, util pinned at 100 %)."""
    out = []
    for i in range(n):
        gpus = tuple(
            GpuReading(
                idx, util if source == "sm_activity" else b, b if source == "sm_activity" else None
            )
            for idx, b in busy.items()
        )
        out.append(UtilSample(float(i), sum(busy.values()) / len(busy), "train", gpus))
    return out


def gpu_at(ss: list[UtilSample], now: float = 44.0, **kw: Any) -> Any:
    return check_utilisation(
        ss, now=now, started_at=0.0, cfg=CFG, device="cuda:0,1,2,3", how="attributed by NVML", **kw
    )


def test_one_idle_gpu_of_four_aborts_naming_it_though_the_mean_passes() -> None:
    ss = gpu_samples({0: 0.97, 1: 0.04, 2: 0.96, 3: 0.98})
    mean = (0.97 + 0.04 + 0.96 + 0.98) / 4
    assert mean > 0.7  # a mean over the GPUs would have let it pass at a 70 % threshold
    f = gpu_at(ss)
    assert f.level == "abort"
    assert f.summary == (
        "GPU 1 at 4 % SM activity over 30 s, threshold 80 % "
        "(mean of 4 GPUs 74 %; device cuda:0,1,2,3, attributed by NVML)"
    )
    ev = f.evidence
    assert (ev["gpu"], ev["figure"], ev["source"]) == (1, pytest.approx(0.04), "sm_activity")
    assert ev["low_gpus"] == [1]
    assert ev["mean_util"] == pytest.approx(mean)
    assert [g["index"] for g in ev["gpus"]] == [0, 1, 2, 3]
    assert all(g["samples"] == 31 for g in ev["gpus"])
    assert f.mistake_ids == ("M-015", "M-035")


def test_every_gpu_busy_is_ok_and_names_the_lowest() -> None:
    f = gpu_at(gpu_samples({0: 0.97, 1: 0.85, 2: 0.96, 3: 0.98}))
    assert f.level == "ok"
    assert f.summary.startswith("lowest GPU 1 at 85 % SM activity over 30 s")


def test_several_idle_gpus_are_all_named_lowest_first() -> None:
    f = gpu_at(gpu_samples({0: 0.5, 1: 0.9, 2: 0.1, 3: 0.9}))
    assert f.level == "abort"
    assert f.evidence["low_gpus"] == [2, 0]
    assert f.summary.startswith(
        "GPU 2 at 10 % SM activity over 30 s, threshold 80 % (also GPU 0 at 50 %;"
    )


def test_util_is_judged_where_the_gpu_has_no_sm_activity() -> None:
    f = gpu_at(gpu_samples({0: 0.3}, source="util"))
    assert f.level == "abort"
    assert f.evidence["source"] == "util"
    assert f.summary.startswith("GPU 0 at 30 % util over 30 s")


def test_sm_activity_decides_when_util_says_busy() -> None:
    # tiny kernels: util (a kernel ran) at 100 %, the SMs nearly idle
    f = gpu_at(gpu_samples({0: 0.05}, util=1.0))
    assert f.level == "abort"
    assert f.evidence["source"] == "sm_activity"


def test_a_gpu_that_joined_during_the_window_waits_for_a_whole_window() -> None:
    ss = gpu_samples({0: 0.95})
    late = GpuReading(1, 1.0, 0.0)  # a rank that just started, idle so far
    ss = [UtilSample(s.t, s.util, s.phase, s.gpus + ((late,) if s.t >= 30 else ())) for s in ss]
    f = gpu_at(ss)
    assert f.level == "ok"  # GPU 1 was not in the window's first sample (t=14)
    assert [g["index"] for g in f.evidence["gpus"]] == [0]
    later = ss + [UtilSample(45.0 + i, 0.5, "train", ss[-1].gpus) for i in range(20)]
    assert gpu_at(later, now=64.0).evidence["gpu"] == 1  # held for a whole window: judged


def test_no_per_gpu_verdict_without_two_figures() -> None:
    ss = [UtilSample(float(i), None, "train", (GpuReading(0),)) for i in range(45)]
    assert gpu_at(ss) is None


# -- the early warning -------------------------------------------------------------------


def test_warning_at_half_the_window_with_the_figure_and_the_time_left() -> None:
    ss = gpu_samples({0: 0.97, 1: 0.04}, n=26)
    args: dict[str, Any] = {"started_at": 0.0, "cfg": CFG, "device": "cuda:0,1"}
    assert warn_utilisation(ss, now=24.0, **args) is None  # grace 10 + half window 15
    w = warn_utilisation(ss, now=25.0, **args)
    assert w is not None and w.level == "warn"
    assert w.summary == (
        "GPU 1 at 4 % SM activity for 15 s (threshold 80 %); aborting in 15 s unless it recovers"
    )
    assert w.evidence["abort_in_s"] == 15.0
    later = gpu_samples({0: 0.97, 1: 0.04}, n=36)
    w = warn_utilisation(later, now=35.0, **args)
    assert w is not None and w.summary.endswith("aborting in 15 s unless it recovers")
    assert gpu_at(later, now=35.0) is None  # the abort itself waits for grace + window


def test_the_warning_is_ok_once_the_gpu_recovers() -> None:
    ss = gpu_samples({0: 0.97, 1: 0.9}, n=26)
    w = warn_utilisation(ss, now=25.0, started_at=0.0, cfg=CFG, device="cuda:0,1")
    assert w is not None and w.level == "ok"


def test_cpu_warning_names_the_figure() -> None:
    ss = [UtilSample(float(i), 0.06, "train", (), "running + waiting") for i in range(26)]
    w = warn_utilisation(ss, now=25.0, started_at=0.0, cfg=CFG, device="cpu")
    assert w is not None
    assert w.summary == (
        "CPU at 6 % for 15 s (running incl. waiting for a CPU; threshold 80 %); "
        "aborting in 15 s unless it recovers"
    )


def test_a_drop_mid_run_is_warned_half_a_window_before_the_abort() -> None:
    # busy for a minute, then idle from t=60: the warning comes when the last half window
    # is low on its mean, the abort half a window later, when both halves are
    ss = gpu_samples({0: 0.97}, n=60) + [
        UtilSample(60.0 + i, 0.04, "train", (GpuReading(0, 1.0, 0.04),)) for i in range(40)
    ]
    args: dict[str, Any] = {"started_at": 0.0, "cfg": CFG, "device": "cuda:0"}
    warned = aborted = None
    for now in range(60, 100):
        w = warn_utilisation(ss, now=float(now), **args)
        if warned is None and w is not None and w.level == "warn":
            warned = (now, w.evidence["abort_in_s"])
        f = check_utilisation(ss, now=float(now), **args)
        if aborted is None and f is not None and f.level == "abort":
            aborted = now
    assert warned is not None and aborted is not None
    at, left = warned
    assert 60 < at < 60 + 15  # the mean of the last 15 s fell below 80 % before all of it idled
    assert left == 15
    assert at + left <= aborted <= at + left + 1  # within one sample interval of the promise


# -- the GPU probe -----------------------------------------------------------------------


def test_a_cuda_job_with_nvml_unreadable_is_refused_with_the_reason() -> None:
    reason = "NVML could not start: NVMLError_DriverNotLoaded: Driver Not Loaded"
    f = check_gpu_probe("cuda", CFG, available=False, reason=reason, count=0)
    assert f is not None and f.level == "abort" and f.rule == "gpu_probe"
    assert f.summary == (
        f'cuda needs readable GPU utilisation and {reason} (watch.gpu_probe = "optional" '
        "runs it unjudged)"
    )
    assert f.mistake_ids == ("M-015",)
    optional = WatchConfig(gpu_probe="optional")
    g = check_gpu_probe("cuda:0", optional, available=False, reason=reason, count=0)
    assert g is not None and g.level == "warn"


def test_the_gpu_probe_check_passes_a_readable_gpu_and_ignores_cpu_and_auto() -> None:
    f = check_gpu_probe("cuda:1", CFG, available=True, reason=None, count=2)
    assert f is not None and f.level == "ok" and f.summary == "NVML reads 2 GPU(s)"
    missing = check_gpu_probe("cuda:2", CFG, available=True, reason=None, count=2)
    assert missing is not None and missing.level == "abort"
    assert missing.summary == "cuda:2 names GPU 2 and NVML reads 2 GPU(s)"
    for device in ("cpu", "auto"):
        assert check_gpu_probe(device, CFG, available=False, reason="x", count=0) is None


def test_unreadable_gpu_utilisation_aborts_after_a_window() -> None:
    args: dict[str, Any] = {"cfg": CFG, "device": "cuda:0", "reason": "NVML gone"}
    assert check_gpu_readable(None, now=100.0, **args) is None
    assert check_gpu_readable(80.0, now=100.0, **args) is None  # 20 s < window 30 s
    f = check_gpu_readable(70.0, now=100.0, **args)
    assert f is not None and f.level == "abort"
    assert f.summary == "no readable GPU utilisation for 30 s on cuda:0: NVML gone"
    optional = check_gpu_readable(
        70.0, now=100.0, cfg=WatchConfig(gpu_probe="optional"), device="cuda:0", reason="x"
    )
    assert optional is not None and optional.level == "warn"


# -- GPU memory --------------------------------------------------------------------------


def test_gpu_memory_above_the_threshold_warns_naming_the_gpu() -> None:
    gpus = [
        GpuReading(0, mem_used=40 * GIB, mem_total=80 * GIB),
        GpuReading(1, mem_used=78 * GIB, mem_total=80 * GIB),
    ]
    f = check_gpu_memory(gpus, CFG)
    assert f is not None and f.level == "warn" and f.rule == "gpu_memory"
    assert f.summary == "GPU 1 memory 78.0/80.0 GB (98 %), warning at 95 %"
    assert f.evidence["gpu"] == 1
    assert check_gpu_memory(gpus[:1], CFG) is None
    assert check_gpu_memory(gpus, WatchConfig(gpu_mem_warn=0)) is None  # 0 disables
    assert check_gpu_memory([GpuReading(0)], CFG) is None  # unknown is not full


# -- non-finite values --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["loss", "grad_norm"])
@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-inf", "Infinity"]
)
def test_nonfinite_loss_or_grad_norm_aborts(key: str, value: Any) -> None:
    f = check_nonfinite({"step": 80, key: value}, CFG)
    assert f is not None
    assert f.level == "abort"
    assert f.summary.startswith(f"{key} is ")
    assert f.summary.endswith(" at step 80")
    assert f.evidence["metric"] == key
    assert f.evidence["step"] == 80
    assert f.mistake_ids == ("M-045",)


@pytest.mark.parametrize(
    "record",
    [
        {"step": 1, "loss": 0.5, "grad_norm": 1.0},
        {"step": 1, "lr": math.nan, "avg_bit_acc": "nan", "eval_loss": math.inf},
        {"step": 1, "loss": "0.5"},
        {"step": 1, "loss": True},
        {"step": 1, "loss": None},
        {"event": "phase", "phase": "eval"},
    ],
)
def test_finite_values_and_other_keys_are_not_flagged(record: dict[str, Any]) -> None:
    assert check_nonfinite(record, CFG) is None


def test_a_huge_integer_loss_is_infinite_not_a_crash() -> None:
    f = check_nonfinite({"step": 3, "loss": 10**400}, CFG)
    assert f is not None
    assert f.summary == "loss is inf at step 3"


@pytest.mark.parametrize("step", ["x" * 100_000, [1, 2], 2**80, True, 1.5])
def test_a_step_that_is_not_a_step_count_is_neither_shown_nor_kept(step: Any) -> None:
    f = check_nonfinite({"step": step, "loss": "nan"}, CFG)
    assert f is not None
    assert f.summary == "loss is nan"
    assert f.evidence["step"] is None


def test_nonfinite_warn_mode_warns() -> None:
    f = check_nonfinite({"loss": "nan"}, WatchConfig(nonfinite="warn"))
    assert f is not None
    assert f.level == "warn"
    assert f.summary == "loss is nan"


# -- the metrics file --------------------------------------------------------------------


def test_metrics_file_that_is_not_a_regular_file_warns_with_what_was_found() -> None:
    f = check_metrics_file("a symlink to /etc/passwd")
    assert f.rule == "metrics_file" and f.level == "warn"
    assert f.summary == (
        "metrics.jsonl is a symlink to /etc/passwd; no metrics are read from it "
        "(the stall rule still applies)"
    )
    assert f.evidence == {"file": "metrics.jsonl", "found": "a symlink to /etc/passwd"}


# -- stall --------------------------------------------------------------------------------


def test_stall_after_the_limit_with_numbers() -> None:
    assert check_stall(100.0, now=220.0, cfg=CFG) is None  # exactly the limit: not yet
    f = check_stall(100.0, now=221.0, cfg=CFG)
    assert f is not None
    assert f.level == "abort"
    assert f.summary == "no metrics for 121 s, limit 120 s"
    assert f.evidence == {"silent_s": 121.0, "stall_s": 120.0}
    assert f.mistake_ids == ("M-037",)


# -- gates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value", "passed"),
    [
        (">= 0.93", 0.93, True),
        (">= 0.93", 0.929, False),
        ("> 0.93", 0.93, False),
        ("> 0.93", 0.94, True),
        ("<= 0.1", 0.1, True),
        ("<= 0.1", 0.2, False),
        ("< 0.1", 0.1, False),
        ("< 0.1", 0.05, True),
        ("== 21", 21, True),
        ("== 21", 20, False),
        ("!= 0", 0, False),
        ("!= 0", 3, True),
    ],
)
def test_gates_all_operators(expr: str, value: float, passed: bool) -> None:
    [r] = check_gates([parse_gate("m", expr)], {"m": value})
    assert r.passed is passed
    assert r.value == value
    assert ("pass" if passed else "FAIL") in r.describe()


def test_a_missing_metric_fails_its_gate() -> None:
    [r] = check_gates([parse_gate("avg_bit_acc", ">= 0.93")], {"loss": 0.1})
    assert not r.passed
    assert r.value is None
    assert r.describe() == "avg_bit_acc: never reported (gate avg_bit_acc >= 0.93)"


@pytest.mark.parametrize("value", [math.nan, "nan", math.inf, "inf", "0.99", True])
def test_a_nonfinite_or_non_numeric_value_fails_its_gate(value: Any) -> None:
    gate = parse_gate("acc", "!= 0") if value is not True else parse_gate("acc", ">= 0.5")
    [r] = check_gates([gate], {"acc": value})
    assert not r.passed


def test_every_gate_is_checked() -> None:
    results = check_gates(
        [parse_gate("a", ">= 0.9"), parse_gate("b", "<= 0.1"), parse_gate("c", "> 0")],
        {"a": 0.95, "b": 0.5},
    )
    assert [r.passed for r in results] == [True, False, False]
    assert results[1].describe() == "b = 0.5 (FAIL, gate b <= 0.1)"
