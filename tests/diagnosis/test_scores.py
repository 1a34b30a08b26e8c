"""The detectors scored on the labelled corpus (``tests/diagnosis/corpus``, see its README).

Per symptom: recall and precision >= 0.9 (a symptom listed as ``tolerated`` for a trace is
neither a hit nor a miss there); zero findings on every healthy trace; the top cause of
each trace's primary symptom right in >= 80 % of the traces that name one. The scores are
printed (``pytest -s``) and written to the test's report section.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli.diagnose import diagnose_file
from harness.core.detectors import SYMPTOMS

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Scores:
    recall: dict[str, float]
    precision: dict[str, float]
    healthy_flagged: list[tuple[str, list[str]]]
    causes_right: int
    causes_named: int
    misses: list[str]

    def table(self) -> str:
        rows = [f"{'symptom':20} recall precision"]
        for s in SYMPTOMS:
            rows.append(f"{s:20} {self.recall[s]:6.2f} {self.precision[s]:9.2f}")
        rows.append(
            f"top cause right: {self.causes_right}/{self.causes_named} "
            f"= {self.causes_right / self.causes_named:.2f}; healthy traces flagged: "
            f"{len(self.healthy_flagged)}"
        )
        return "\n".join(rows)


@pytest.fixture(scope="module")
def scores() -> Scores:
    labels = json.loads((CORPUS / "labels.json").read_text())
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    healthy, misses = [], []
    right = named = 0
    for name, label in sorted(labels.items()):
        diagnosis, _ = diagnose_file(CORPUS / name)
        got = {f.symptom for f in diagnosis.findings}
        want, tolerated = set(label["symptoms"]), set(label.get("tolerated", []))
        for s in got - want - tolerated:
            fp[s] += 1
            misses.append(f"false {s} in {name}")
        for s in want - got:
            fn[s] += 1
            misses.append(f"missed {s} in {name}")
        for s in want & got:
            tp[s] += 1
        if label["healthy"] and got - tolerated:
            healthy.append((name, sorted(got)))
        if label.get("primary") and label.get("cause"):
            named += 1
            found = [f for f in diagnosis.findings if f.symptom == label["primary"]]
            top = found[0].causes[0].cause if found and found[0].causes else None
            if top == label["cause"]:
                right += 1
            else:
                misses.append(f"cause of {name}: {top}, labelled {label['cause']}")
    recall = {s: tp[s] / (tp[s] + fn[s]) if tp[s] + fn[s] else 0.0 for s in SYMPTOMS}
    precision = {s: tp[s] / (tp[s] + fp[s]) if tp[s] + fp[s] else 0.0 for s in SYMPTOMS}
    return Scores(recall, precision, healthy, right, named, misses)


def test_every_symptom_is_found_with_recall_and_precision_of_at_least_0_9(
    scores: Scores, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print("\n" + scores.table())
    low = {s: (scores.recall[s], scores.precision[s]) for s in SYMPTOMS}
    low = {s: rp for s, rp in low.items() if min(rp) < 0.9}
    assert not low, f"{low}; {scores.misses}"


def test_no_healthy_trace_gets_a_finding(scores: Scores) -> None:
    assert scores.healthy_flagged == []


def test_the_top_cause_is_right_in_at_least_80_percent(scores: Scores) -> None:
    assert scores.causes_named >= 40
    assert scores.causes_right / scores.causes_named >= 0.8, scores.misses
