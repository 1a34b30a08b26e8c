"""The trainer end to end: learning, resume, live controls, preflight and SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness._atomic import write_json_atomic
from model.train import main, validate_control

TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--batch", "16", "--seq-len", "16"]
TINY += ["--eval-windows", "64", "--warmup", "5", "--lr", "0.01"]
TINY += ["--threads", "1"]  # a tiny model gains nothing from more; robust on a busy machine
REPO = Path(__file__).resolve().parents[2]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *extra]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _losses(path: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in _lines(path) if "step" in m and "loss" in m}


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *argv: str) -> Path:
    metrics = tmp_path / f"{name}.jsonl"
    monkeypatch.setenv("HARNESS_METRICS", str(metrics))
    monkeypatch.delenv("HARNESS_CONTROLS", raising=False)
    assert main(list(argv)) == 0
    return metrics


def test_loss_falls_over_50_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = _run(
        tmp_path, monkeypatch, "m", *_args(tmp_path, "--steps", "50", "--log-every", "5")
    )
    losses = _losses(metrics)
    assert losses[50] < losses[5] - 0.05
    lines = _lines(metrics)
    assert lines[0]["event"] == "start" and lines[0]["ceiling"] == 0.9375
    end = lines[-1]
    assert end["event"] == "end" and end["steps"] == 50 and 0.5 < end["avg_bit_acc"] <= 1.0
    phases = [m["phase"] for m in lines if m.get("event") == "phase"]
    assert phases[:2] == ["data", "train"] and "eval" in phases and "checkpoint" in phases


def test_resume_continues_the_same_loss_trajectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _run(
        tmp_path / "a",
        monkeypatch,
        "m",
        *_args(tmp_path / "a", "--steps", "40", "--log-every", "1"),
    )
    _run(
        tmp_path / "b",
        monkeypatch,
        "m1",
        *_args(tmp_path / "b", "--steps", "20", "--log-every", "1"),
    )
    ckpt = tmp_path / "b" / "run" / "checkpoints" / "step-0000020.pt"
    resumed = _run(
        tmp_path / "b",
        monkeypatch,
        "m2",
        *_args(tmp_path / "b", "--steps", "40", "--log-every", "1", "--resume", str(ckpt)),
    )
    a, b = _losses(straight), _losses(resumed)
    assert sorted(b) == list(range(21, 41))
    for step in range(21, 41):
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert a[40] != pytest.approx(a[21], rel=1e-4)  # the comparison is not between constants


def test_checkpoint_holds_everything_needed_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path, monkeypatch, "m", *_args(tmp_path, "--steps", "10", "--checkpoint-every", "5"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "step-0000005.pt", weights_only=False)
    assert ckpt["step"] == 5
    assert {"model", "optimizer", "rng", "sampler", "controls", "config"} <= set(ckpt)
    assert {"torch", "numpy", "python"} <= set(ckpt["rng"])


def test_preflight_passes_and_fails_with_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "--preflight")) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out
    assert main(_args(tmp_path, "--preflight", "--task", "shift", "--seq-len", "8")) == 1
    out = capsys.readouterr().out
    assert "FAIL seq_len: 8 < 17" in out


def test_preflight_fails_on_a_corrupted_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "--preflight")) == 0
    path = tmp_path / "data" / "echo-train-seed0.bin"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    capsys.readouterr()
    assert main(_args(tmp_path, "--preflight")) == 1
    assert f"FAIL data train: {path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("lr", -1, "must be > 0, got -1"),
        ("lr", "fast", "must be a number"),
        ("lr", True, "must be a number"),
        ("eval_every", 2.5, "must be an integer"),
        ("checkpoint_every", -3, "must be >= 0"),
        ("data_weights", {"echo": 1, "nope": 1}, "unknown task 'nope'"),
        ("data_weights", {"echo": 0}, "must be a number > 0"),
        ("data_weights", {"shift": 1}, "shift needs seq_len >= 17"),
        ("data_weights", [], "non-empty object"),
        ("momentum", 0.9, "unknown control"),
    ],
)
def test_bad_controls_are_rejected_with_a_reason(key: str, value: object, reason: str) -> None:
    clean, why = validate_control(key, value, seq_len=16)
    assert clean is None and why is not None and reason in why


# -- real subprocesses: live controls and SIGINT ------------------------------------------------


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        HARNESS_METRICS=str(tmp_path / "metrics.jsonl"),
        HARNESS_CONTROLS=str(tmp_path / "controls.json"),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "model.train", *_args(tmp_path, *extra)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    tmp_path: Path,
    proc: subprocess.Popen[str],
    found: Callable[[dict[str, Any]], bool],
    after: int = 0,
) -> tuple[int, dict[str, Any]]:
    """Index and line of the first metrics line after index ``after`` that matches."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for i, line in enumerate(_lines(tmp_path / "metrics.jsonl")):
            if i >= after and found(line):
                return i, line
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("metrics line never appeared")


def test_live_controls_change_the_run_and_bad_ones_are_rejected(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--steps", "100000", "--log-every", "1", "--eval-every", "0")
    try:
        _wait_for(tmp_path, proc, lambda m: m.get("step", 0) >= 3)
        write_json_atomic(tmp_path / "controls.json", {"lr": 0.0005, "eval_every": 7})
        i, applied = _wait_for(tmp_path, proc, lambda m: m.get("event") == "controls")
        assert applied["applied"] == {"lr": 0.0005, "eval_every": 7}
        _, line = _wait_for(tmp_path, proc, lambda m: "loss" in m, after=i)
        assert line["lr"] == 0.0005
        _wait_for(tmp_path, proc, lambda m: "avg_bit_acc" in m, after=i)  # eval now runs

        write_json_atomic(tmp_path / "controls.json", {"lr": -1, "eval_every": 7})
        i, rejected = _wait_for(tmp_path, proc, lambda m: "rejected" in m)
        assert rejected["applied"] == {}
        assert rejected["rejected"] == {"lr": "must be > 0, got -1"}
        _, line = _wait_for(tmp_path, proc, lambda m: "loss" in m, after=i)
        assert line["lr"] == 0.0005  # the old value stays

        write_json_atomic(tmp_path / "controls.json", {"lr": -1, "data_weights": {"not": 2}})
        i, mix = _wait_for(tmp_path, proc, lambda m: "data_weights" in m.get("applied", {}))
        assert mix["applied"] == {"data_weights": {"not": 2.0}}
        assert (tmp_path / "data" / "not-train-seed0.bin").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "control lr rejected: must be > 0, got -1" in err


def test_sigint_checkpoints_and_exits_zero(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--steps", "100000", "--log-every", "1", "--checkpoint-every", "0")
    try:
        _wait_for(tmp_path, proc, lambda m: m.get("step", 0) >= 3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    lines = _lines(tmp_path / "metrics.jsonl")
    end = lines[-1]
    assert end["event"] == "end" and end["interrupted"] is True
    saved = [m for m in lines if m.get("event") == "checkpoint"]
    assert len(saved) == 1 and saved[0]["step"] == end["steps"] >= 3
    ckpt = torch.load(saved[0]["path"], weights_only=False)
    assert ckpt["step"] == end["steps"]
    assert "interrupted at step" in out
