"""The supervision path's store writes make their own values strict JSON (issue 10).

The store's engine is strict too; these check the supervisor's own guarantee, by looking
at what each write function hands to the store, not at what the engine made of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import mistakes as ml
from harness.core.rules import Finding
from harness.runtime import records
from harness.runtime.records import finish_run, insert_run, record_finding, set_fields, stored
from memory import Run, Store

HOSTILE = {"loss": math.nan, "big": -math.inf, "note": "a \ud800", "\udfffk": [math.inf, (1, 2)]}
CLEAN = {"loss": "nan", "big": "-inf", "note": "a \ufffd", "\ufffdk": ["inf", [1, 2]]}


def strict(value: Any) -> None:
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = ml.open_log(tmp_path / "harness.db")
    insert_run(s, Run(id="r1", name="r", status="running", run_dir=str(tmp_path)))
    return s


def test_stored_keeps_non_finite_numbers_as_text_and_cleans_text() -> None:
    assert stored(HOSTILE) == CLEAN
    strict(stored(HOSTILE))


def test_incident_evidence_summary_and_action_are_cleaned_before_the_store(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real = ml.record_incident

    def spy(**kw: Any) -> Any:
        seen.update(kw)
        return real(**kw)

    monkeypatch.setattr(records.ml, "record_incident", spy)
    finding = Finding("nonfinite", "abort", "loss is nan \ud800", HOSTILE)

    record_finding(store, "r1", finding, "abort", "aborted \udcff", ts=5.0)

    assert seen["evidence"] == {**CLEAN, "mistake_ids": ["M-045"]}
    assert seen["summary"] == "loss is nan \ufffd" and seen["action"] == "aborted \ufffd"
    assert seen["ts"] == 5.0


def test_row_fields_and_the_final_result_are_cleaned_before_the_store(store: Store) -> None:
    set_fields(store, "r1", {"progress": HOSTILE, "status": "running"})
    with store.read() as s:
        row = s.get(Run, "r1")
        assert row is not None and row.progress == CLEAN

    row = finish_run(store, "r1", "aborted", "aborted: \ud800", {"final": HOSTILE}, 0, 9.0)

    assert row is not None
    assert row.result == {"final": CLEAN} and row.summary == "aborted: \ufffd"
    assert row.ended_at == 9.0
    assert finish_run(store, "nope", "aborted", "x", {}, 0, 9.0) is None
    set_fields(store, "nope", {"status": "x"})  # an unknown run: nothing, no error
