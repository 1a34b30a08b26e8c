"""Tests of the diagnosis corpus itself (its files and labels), not of any detector."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.core.detectors import CAUSES, SYMPTOMS  # the fixed identifiers
from harness.job.protocol import EVENTS, PHASES
from tests.diagnosis import make_synthetic

CORPUS = Path(__file__).resolve().parent / "corpus"

KEYS = {"healthy", "symptoms", "primary", "onset_step", "cause", "source", "note"}
NONFINITE = ("nan", "inf", "-inf")


def _labels() -> dict[str, dict[str, Any]]:
    labels: dict[str, dict[str, Any]] = json.loads((CORPUS / "labels.json").read_text())
    return labels


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(s) for s in (CORPUS / name).read_text().splitlines()]


LABELS = _labels()
FILES = sorted(p.name for p in CORPUS.glob("*.jsonl"))


def test_every_label_has_a_file_and_every_file_a_label() -> None:
    assert sorted(LABELS) == FILES
    assert len(FILES) >= 60


def test_sizes() -> None:
    sizes = {p.name: p.stat().st_size for p in CORPUS.glob("*.jsonl")}
    assert {n: s for n, s in sizes.items() if s >= 300_000} == {}
    assert sum(sizes.values()) < 6_000_000


@pytest.mark.parametrize("name", sorted(LABELS))
def test_label_is_well_formed(name: str) -> None:
    lab = LABELS[name]
    assert KEYS <= set(lab) <= KEYS | {"tolerated"}
    assert isinstance(lab["healthy"], bool)
    assert isinstance(lab["symptoms"], list)
    assert len(set(lab["symptoms"])) == len(lab["symptoms"])
    assert set(lab["symptoms"]) <= set(SYMPTOMS)
    tolerated = lab.get("tolerated", [])
    assert set(tolerated) <= set(SYMPTOMS)
    assert not set(tolerated) & set(lab["symptoms"])
    assert lab["cause"] is None or lab["cause"] in CAUSES
    assert lab["source"] == ("real" if name.startswith("real_") else "synthetic")
    assert name.startswith(("real_", "syn_"))
    assert isinstance(lab["note"], str) and lab["note"] and "\n" not in lab["note"]
    if lab["healthy"]:
        assert lab["symptoms"] == [] and not tolerated
        assert lab["primary"] is None and lab["cause"] is None and lab["onset_step"] is None
        assert "healthy" in name
    else:
        assert lab["symptoms"], "an unhealthy trace names its symptoms"
        assert lab["primary"] in lab["symptoms"]
        assert isinstance(lab["onset_step"], int) and not isinstance(lab["onset_step"], bool)
        start = _lines(name)[0]
        assert 0 <= lab["onset_step"] <= start["total_steps"]
        assert lab["cause"] is not None
        if name.startswith("syn_"):
            assert name.startswith(f"syn_{lab['primary']}_"), "synthetic names say the primary"


def _is_metric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        return value in NONFINITE
    if isinstance(value, list):
        return all(_is_metric(v) for v in value)
    return False


@pytest.mark.parametrize("name", FILES)
def test_trace_follows_the_protocol(name: str) -> None:
    lines = _lines(name)
    assert lines and lines[0].get("event") == "start"
    last_t = -math.inf
    last_step = -1
    phase: str | None = None
    steps_seen = 0
    for n, line in enumerate(lines, 1):
        where = f"{name}:{n}"
        assert isinstance(line, dict), where
        t = line.get("t")
        assert isinstance(t, int | float) and not isinstance(t, bool), where
        assert t >= last_t, f"{where}: t goes back"
        last_t = t
        event = line.get("event")
        if event is None:
            step = line.get("step")
            assert isinstance(step, int) and not isinstance(step, bool), where
            assert step >= last_step, f"{where}: step {step} after {last_step}"
            last_step = step
            steps_seen += 1
            metrics = {k: v for k, v in line.items() if k not in ("step", "t")}
            assert metrics, f"{where}: a step line without metrics"
            assert all(_is_metric(v) for v in metrics.values()), where
            assert phase in ("train", "eval"), f"{where}: a step line in phase {phase}"
            continue
        assert event in EVENTS, where
        if event == "start":
            assert isinstance(line["total_steps"], int) and line["total_steps"] > 0, where
            assert isinstance(line["device"], str), where
            last_step, phase = int(line.get("resumed_from", 0)) - 1, None  # a new attempt
        elif event == "phase":
            assert line["phase"] in PHASES, where
            phase = line["phase"]
        elif event == "checkpoint":
            assert isinstance(line["path"], str), where
            assert isinstance(line["step"], int) and line["step"] >= last_step, where
        elif event == "controls":
            assert isinstance(line["applied"], dict), where
            assert set(line["applied"]) <= {"lr", "data_weights", "eval_every", "checkpoint_every"}
        elif event == "end":  # the last line, or a new attempt follows
            assert n == len(lines) or lines[n].get("event") == "start", where
    assert steps_seen >= 10


def test_symptom_and_cause_coverage() -> None:
    symptoms = Counter(s for lab in LABELS.values() for s in lab["symptoms"])
    assert {s: symptoms[s] for s in SYMPTOMS if symptoms[s] < 4} == {}
    causes = Counter(lab["cause"] for lab in LABELS.values() if not lab["healthy"])
    need = {c: 2 if c == "unknown" else 3 for c in CAUSES}
    assert {c: causes[c] for c in CAUSES if causes[c] < need[c]} == {}
    # the brief's cause cases among the synthetic traces
    syn = [lab for name, lab in LABELS.items() if name.startswith("syn_")]
    for cause in CAUSES:
        assert sum(lab["cause"] == cause for lab in syn) >= (2 if cause == "unknown" else 3)


def test_healthy_coverage() -> None:
    healthy = [name for name, lab in LABELS.items() if lab["healthy"]]
    assert len(healthy) >= 15
    hard = [n for n in healthy if n.startswith("syn_hard_healthy_")]
    real = [n for n in healthy if LABELS[n]["source"] == "real"]
    assert len(hard) >= 15
    assert len(hard) + len(real) >= 3
    assert real, "at least one real healthy run"


def test_real_traces() -> None:
    real = [n for n, lab in LABELS.items() if lab["source"] == "real"]
    assert len(real) >= 5
    assert {LABELS[n]["cause"] for n in real} >= {"lr_change", "data_change", "unknown"}
    assert "lr_too_high" in {LABELS[n]["cause"] for n in real}
    for name in real:
        lines = _lines(name)
        assert lines[0]["device"] == "cpu" and lines[0].get("task") in ("echo", "not")
        assert lines[-1]["event"] == "end"


def test_synthetic_variety() -> None:
    """Scales, lengths and logging intervals vary across the synthetic traces."""
    lengths, intervals, scales = [], [], []
    for name in FILES:
        if not name.startswith("syn_"):
            continue
        lines = _lines(name)
        lengths.append(lines[0]["total_steps"])
        steps = sorted({x["step"] for x in lines if "loss" in x and "event" not in x})
        intervals.append(min(b - a for a, b in itertools.pairwise(steps)))
        finite = [x["loss"] for x in lines if isinstance(x.get("loss"), int | float)]
        if finite:
            scales.append(min(finite))
    assert min(lengths) <= 200 and max(lengths) >= 20000
    assert min(intervals) == 1 and max(intervals) >= 50
    assert min(scales) <= 0.01 and max(scales) >= 5


def test_the_synthetic_files_are_what_the_generator_makes() -> None:
    """make_synthetic.py is deterministic and the committed syn_* files are its output."""
    built = make_synthetic.build()
    again = make_synthetic.build()
    assert built == again
    assert sorted(built) == [n for n in FILES if n.startswith("syn_")]
    for name, (lines, lab) in built.items():
        assert _lines(name) == lines, f"{name}: rerun tests/diagnosis/make_synthetic.py"
        assert LABELS[name] == lab, f"{name}: labels.json is stale"
