"""Text that no encoder accepts (a lone surrogate) never reaches the database: what a
person wrote is refused with one line (and, in MISTAKES.md, its line number); what a job
produced (an incident's summary) is kept with U+FFFD in place of the bad character."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mistakes as ml
from memory import Store

ENTRY = "# Mistakes\n\n## Category: Data\n\n### M-100: Loader {title}\n\n**Fix:** {fix}\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with ml.open_log(tmp_path / "harness.db") as s:
        yield s


@pytest.mark.parametrize(
    ("title", "category", "fields", "named"),
    [
        ("bad \udcff title", "General", {}, "the title"),
        ("fine", "Da\ud800ta", {}, "the category"),
        ("fine", "General", {"Fix": "re\udc80run"}, "field 'Fix'"),
        ("fine", "General", {"N\ud800me": "x"}, "a field name"),
    ],
)
def test_add_refuses_text_that_is_not_unicode(
    store: Store, title: str, category: str, fields: dict[str, str], named: str
) -> None:
    with pytest.raises(ml.InvalidInputError) as info, store.write() as s:
        ml.add_mistake(session=s, title=title, category=category, fields=fields)
    message = str(info.value)
    assert message.startswith(f"{named} is not valid Unicode") and "\n" not in message
    with store.read() as s:
        assert all(m.source == "builtin" for m in ml.list_mistakes(session=s))


def test_import_names_the_line_of_a_lone_surrogate_and_writes_nothing(store: Store) -> None:
    text = ENTRY.format(title="ok", fix="rerun \udcff the loader")
    with pytest.raises(ml.ImportRejectedError) as info:
        ml.import_markdown(store, text, source="MISTAKES.md")
    (problem,) = info.value.problems
    assert problem.line == 7
    assert "U+DCFF" in problem.message
    with store.read() as s:
        assert "M-100" not in {m.id for m in ml.list_mistakes(session=s)}
    # the same file, fixed, goes in
    report = ml.import_markdown(store, ENTRY.format(title="ok", fix="rerun the loader"))
    assert report.added == ["M-100"]


def test_an_incident_summary_from_job_output_is_cleaned_not_lost(store: Store) -> None:
    with store.write() as s:
        ml.record_incident(
            session=s,
            rule="stall",
            summary="no metrics; stderr says \udcff\udcfe",
            action="abort \ud800",
            run_id="r\udc80",
        )
    with store.read() as s:
        (incident,) = ml.list_incidents(session=s)
    assert incident.summary == "no metrics; stderr says \ufffd\ufffd"
    assert incident.action == "abort \ufffd"
    assert incident.run_id == "r\ufffd"


def test_resolving_with_a_note_that_is_not_unicode_is_refused(store: Store) -> None:
    with store.write() as s:
        incident = ml.record_incident(session=s, rule="stall", summary="no metrics")
    with (
        pytest.raises(ml.InvalidInputError, match="the note is not valid Unicode"),
        store.write() as s,
    ):
        ml.resolve_incident(session=s, incident_id=incident.id or 0, note="fixed \ud800")
