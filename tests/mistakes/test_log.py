"""The mistake log against a real SQLite file: catalogue, import/export, search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

import mistakes as ml
from memory import Store
from mistakes._catalogue import BUILTIN_MISTAKES

FIXTURE = Path(__file__).parents[1] / "fixtures" / "MISTAKES.md"
REQUIRED = ("M-008", "M-014", "M-015", "M-025", "M-030", "M-032", "M-035", "M-037")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with ml.open_log(tmp_path / "harness.db") as s:
        yield s


def _records(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with store.read() as s:
        mistakes = [
            (m.id, m.title, m.category, m.section, tuple(m.fields()))
            for m in s.exec(select(ml.Mistake).order_by(ml.Mistake.id)).all()
        ]
        items = [
            (c.title, c.text, tuple(c.mistake_ids), c.checked)
            for c in s.exec(select(ml.ChecklistItem).order_by(ml.ChecklistItem.title)).all()
        ]
    return mistakes, items


def test_fresh_install_has_the_catalogue_every_rule_links_to(store: Store) -> None:
    with store.read() as s:
        have = {m.id: m for m in ml.list_mistakes(session=s)}
        for mid in (*REQUIRED, ml.NONFINITE_ID):
            m = have[mid]
            assert m.symptom and m.root_cause and m.fix and m.prevention, mid
        for ids in ml.RULE_LINKS.values():
            assert set(ids) <= set(have)
        views = ml.checklist(session=s)
    assert {v.item.title for v in views if "utilisation" in v.enforced_by} == {"Device utilisation"}


def test_reopening_does_not_duplicate_or_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with ml.open_log(path) as store, store.write() as s:
        m = ml.get_mistake(session=s, mistake_id="M-015")
        m.title = "our own words"
        s.add(m)
    with ml.open_log(path) as store, store.read() as s:
        assert ml.get_mistake(session=s, mistake_id="M-015").title == "our own words"
        assert len(ml.list_mistakes(session=s)) == len(BUILTIN_MISTAKES) == 27


def test_import_export_import_round_trip_is_identical(tmp_path: Path, store: Store) -> None:
    report = ml.import_markdown(store, FIXTURE.read_bytes())
    assert len(report.added) + len(report.updated) >= 30
    assert not report.problems
    with store.read() as s:
        exported = ml.export_markdown(session=s)
    with ml.open_log(tmp_path / "second.db") as second:
        ml.import_markdown(second, exported.encode())
        assert _records(second) == _records(store)
        with second.read() as s:
            assert ml.export_markdown(session=s) == exported
    # Importing the export into the same log changes no text.
    before = _records(store)
    ml.import_markdown(store, exported)
    assert _records(store) == before


def test_user_text_wins_over_the_builtin_text(store: Store) -> None:
    ml.import_markdown(store, FIXTURE.read_bytes())
    fixture_text = FIXTURE.read_text()
    with store.read() as s:
        m = ml.get_mistake(session=s, mistake_id="M-015")
    assert m.source == "user"
    assert m.title in fixture_text


def test_extra_fields_and_categories_survive(store: Store) -> None:
    ml.import_markdown(store, FIXTURE.read_bytes())
    with store.read() as s:
        rows = ml.list_mistakes(session=s)
    assert sum(1 for m in rows if m.extra) >= 5
    assert len({m.section for m in rows}) >= 5


BAD = b"""# Mistakes

## Prevention Checklist

- [ ] **Watch the GPU:** check utilisation. (M-015, M-099)

## Category: Data

### M-101: First entry

**Symptom:** one

### M-101: Same id again

**Symptom:** two

### An entry without an id

**Symptom:** three
"""


def test_malformed_file_is_rejected_with_line_numbers_and_nothing_written(store: Store) -> None:
    before = _records(store)
    with pytest.raises(ml.ImportRejectedError) as info:
        ml.import_markdown(store, BAD, source="bad.md")
    lines = {p.line for p in info.value.problems}
    assert lines == {5, 13, 17}
    assert "bad.md" in str(info.value)
    assert _records(store) == before


def test_partial_import_writes_only_the_valid_entries(store: Store) -> None:
    report = ml.import_markdown(store, BAD, partial=True)
    assert report.added == ["M-101"]
    assert len(report.problems) >= 3
    with store.read() as s:
        assert ml.get_mistake(session=s, mistake_id="M-101").symptom == "one"
        titles = {v.item.title for v in ml.checklist(session=s)}
    assert "Watch the GPU" not in titles


def test_non_utf8_file_is_rejected(store: Store) -> None:
    data = b"# Mistakes\n\n## Category: X\n\n### M-200: ok\n\n**Fix:** caf" + b"\xe9\n"
    with pytest.raises(ml.ImportRejectedError) as info:
        ml.import_markdown(store, data)
    assert info.value.problems[0].line == 7


@pytest.mark.parametrize(
    "query",
    ["util AND (", '"', '""', "*", "-", "-gpu", "NEAR(", "a OR", "ünïcödé ☃", "'; DROP", "^x", ""],
)
def test_hostile_queries_never_crash(store: Store, query: str) -> None:
    with store.read() as s:
        hits = ml.search(session=s, query=query)
    assert isinstance(hits, list)


def test_search_ranks_the_relevant_entry_first(store: Store) -> None:
    with store.read() as s:
        hits = ml.search(session=s, query="util AND (")
        assert hits and hits[0].id in ("M-015", "M-035")
        assert ml.search(session=s, query="nan loss")[0].id == ml.NONFINITE_ID
        assert ml.search(session=s, query="m-32")[0].id == "M-032"
        assert ml.search(session=s, query="zzzz-qqqq") == []


def test_search_finds_incidents_by_evidence_and_summary(store: Store) -> None:
    with store.write() as s:
        ml.record_incident(
            session=s,
            rule="utilisation",
            summary="CPU 6 % over 30 s, threshold 80 %",
            run_id="echo-1",
            mistake_id="M-015",
            severity="abort",
            evidence={"util": 0.06, "window_s": 30},
        )
    with store.read() as s:
        hits = ml.search(session=s, query="threshold", kinds=("incident",))
    assert [h.kind for h in hits] == ["incident"]
    assert "6 %" in hits[0].title


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=60))
def test_any_text_is_a_safe_query(store: Store, query: str) -> None:
    with store.read() as s:
        ml.search(session=s, query=query)


def test_add_assigns_the_next_id_and_refuses_duplicates(store: Store) -> None:
    with store.write() as s:
        m = ml.add_mistake(
            session=s,
            title="Disk filled up",
            category="Storage",
            fields={"Fix": "prune", "Cost": "3h"},
        )
    assert m.id == "M-050"
    assert m.fix == "prune" and m.extra == [["Cost", "3h"]]
    with pytest.raises(ml.InvalidInputError, match="M-046 exists"), store.write() as s:
        ml.add_mistake(session=s, title="again", mistake_id="m-46")
    with pytest.raises(ml.InvalidInputError, match="not a mistake id"), store.write() as s:
        ml.add_mistake(session=s, title="x", mistake_id="X-1")
