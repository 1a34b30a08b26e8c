"""The checklist rules as pure functions: verdicts, evidence numbers and summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from harness.core.rules import (
    UtilSample,
    check_gates,
    check_metrics_file,
    check_nonfinite,
    check_ram,
    check_stall,
    check_utilisation,
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
