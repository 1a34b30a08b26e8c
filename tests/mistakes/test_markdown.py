"""MISTAKES.md parsing and rendering: the fixture, round trips, and every malformed case."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from mistakes._markdown import (
    ID_RE,
    STANDARD_FIELDS,
    ChecklistEntry,
    Entry,
    ParsedFile,
    Problem,
    parse_markdown,
    render_markdown,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "MISTAKES.md"


def fixture() -> ParsedFile:
    return parse_markdown(FIXTURE.read_bytes())


def by_id(parsed: ParsedFile) -> dict[str, Entry]:
    return {entry.id: entry for entry in parsed.entries}


def doc(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def messages(parsed: ParsedFile) -> list[str]:
    return [str(problem) for problem in parsed.problems]


# --------------------------------------------------------------------------- the fixture


def test_fixture_parses_without_problems() -> None:
    parsed = fixture()
    assert parsed.problems == []
    assert len(parsed.entries) >= 30
    sections = {entry.section for entry in parsed.entries}
    assert len(sections) >= 5
    assert "Stability journal" in sections
    assert "Category: GPU & Devices" in sections


def test_fixture_holds_the_ids_the_rules_link_to() -> None:
    ids = by_id(fixture())
    for mistake_id in ("M-008", "M-014", "M-015", "M-025", "M-030", "M-032", "M-035", "M-037"):
        assert mistake_id in ids
    assert all(ID_RE.fullmatch(mistake_id) for mistake_id in ids)


def test_fixture_entry_has_title_section_fields_and_line() -> None:
    lines = FIXTURE.read_text(encoding="utf-8").split("\n")
    entry = by_id(fixture())["M-015"]
    assert entry.title == "Hours at 5 % GPU utilisation"
    assert entry.section == "Category: GPU & Devices"
    assert lines[entry.line - 1] == "### M-015: Hours at 5 % GPU utilisation"
    assert [name for name, _ in entry.fields] == [*STANDARD_FIELDS, "Evidence", "Related"]
    assert entry.get("related") == "M-011, M-035"
    assert entry.get("Fix") == (
        "1. Move augmentation into the dataloader workers.\n"
        "2. Vectorise what is left so it runs on the device as part of the batch.\n"
        "3. Re-measure: utilisation above 90 % in the train phase."
    )


def test_fixture_keeps_extra_fields() -> None:
    extra = {
        entry.id: [name for name, _ in entry.fields if name not in STANDARD_FIELDS]
        for entry in fixture().entries
    }
    with_extra = {mistake_id: names for mistake_id, names in extra.items() if names}
    assert len(with_extra) >= 5
    assert with_extra["M-025"] == ["Evidence"]
    assert with_extra["M-020"] == ["Cost"]
    assert with_extra["M-034"] == ["Related"]
    assert with_extra["M-006"] == ["Notes"]  # prose before the first field


def test_fixture_multiline_values_keep_bullets_and_subbullets() -> None:
    fix = by_id(fixture())["M-030"].get("Fix")
    assert fix == (
        "- memory-map the shards instead of decoding them into Python lists;\n"
        "- four workers instead of eight:\n"
        "  - each worker now peaks at 1.1 GB instead of 3.4 GB;\n"
        "  - **Note:** the loader is slightly slower, still above the utilisation floor.\n"
        "- keep 4 GB free as a hard floor."
    )
    root_cause = by_id(fixture())["M-026"].get("Root cause")
    assert root_cause is not None
    assert root_cause.startswith("Several sources of randomness:\n- the seed was set")


def test_fixture_checklist_ids_resolve() -> None:
    parsed = fixture()
    ids = set(by_id(parsed))
    assert len(parsed.checklist) >= 8
    assert all(set(item.mistake_ids) <= ids for item in parsed.checklist)
    assert any(item.checked for item in parsed.checklist)
    assert any(not item.checked for item in parsed.checklist)
    items = {item.title: item for item in parsed.checklist}
    assert items["Resume test"].mistake_ids == ["M-020", "M-034", "M-038"]
    assert items["Utilisation floor"].checked
    # wrapped onto a second line: joined with one space, trailing period kept
    assert items["Every metric gates"].text == (
        "a run succeeds only when every declared gate passes, and a missing metric fails its gate."
    )


def test_fixture_template_block_is_not_an_entry() -> None:
    parsed = fixture()
    assert "### M-000: Short title of the mistake" in FIXTURE.read_text(encoding="utf-8")
    assert "M-000" not in by_id(parsed)
    assert not [entry for entry in parsed.entries if entry.section == "Template"]


def test_fixture_code_block_in_fix_is_kept_verbatim() -> None:
    fix = by_id(fixture())["M-004"].get("Fix")
    assert fix is not None
    block = (
        "```python\n"
        "running = torch.zeros((), device=device)\n"
        "for step, batch in enumerate(loader):\n"
        "    loss = train_step(batch)\n"
        "    running += loss.detach()\n"
        "    if step % log_every == 0:\n"
        "        report.step(step, loss=(running / log_every).item())\n"
        "        running.zero_()\n"
        "```"
    )
    assert fix.endswith("interval:\n\n" + block)


def test_fixture_round_trip() -> None:
    first = fixture()
    text = render_markdown(first.entries, first.checklist)
    second = parse_markdown(text)
    assert second.problems == []
    assert second.entries == first.entries
    assert second.checklist == first.checklist
    # and rendering is stable
    assert render_markdown(second.entries, second.checklist) == text


# --------------------------------------------------------------------------- render


def test_render_layout() -> None:
    entries = [
        Entry("M-002", "Second", "Category: B", [("When", "later")]),
        Entry("M-001", "First", "Category: A", [("Fix", "- a\n- b"), ("Cost", "1 h")]),
        Entry("M-003", "Third", "Category: B", [("When", "")]),
    ]
    items = [
        ChecklistEntry("Check", "text", ["M-001", "M-002"]),
        ChecklistEntry("Done", "", ["M-003"], checked=True),
    ]
    text = render_markdown(entries, items, title="Team mistakes")
    assert text.startswith("# Team mistakes\n")
    assert "- [ ] **Check:** text (M-001, M-002)\n" in text
    assert "- [x] **Done:** (M-003)\n" in text
    assert text.index("## Category: B") < text.index("## Category: A")
    assert text.index("### M-003: Third") < text.index("## Category: A")
    assert "**Fix:**\n- a\n- b\n" in text
    assert text.rstrip().endswith("```")
    assert text.index("## Template") > text.index("### M-001")
    parsed = parse_markdown(text)
    assert parsed.problems == []
    assert parsed.entries == [entries[0], entries[2], entries[1]]  # grouped by section
    assert parsed.checklist == items


# --------------------------------------------------------------------------- property


_NO_CONTROL = st.characters(blacklist_categories=("Cc", "Cs"))
_PLAIN = st.text(_NO_CONTROL, max_size=30)
_ONE_LINE = _PLAIN.map(str.strip).filter(bool)
_NAME = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="*"))
_STANDARD = {name.casefold(): name for name in STANDARD_FIELDS}


def _structural(line: str) -> bool:
    """Lines the format reads as structure, which a value cannot hold (documented)."""
    return (
        line.startswith(("**", "##"))
        or line.lstrip().startswith(("```", "~~~"))
        or re.fullmatch(r"-{3,}\s*", line) is not None
    )


_VALUE_LINE = st.one_of(
    _PLAIN,
    st.just(""),
    _PLAIN.map(lambda s: f"- {s}"),
    _PLAIN.map(lambda s: f"* {s}"),
    _PLAIN.map(lambda s: f"  - {s}"),
    st.tuples(st.integers(1, 12), _PLAIN).map(lambda t: f"{t[0]}. {t[1]}"),
    st.tuples(st.integers(1, 12), _PLAIN).map(lambda t: f"{t[0]}) {t[1]}"),
    _PLAIN.map(lambda s: f"text with **Bold:** mid-line {s}"),
).filter(lambda line: not _structural(line))


def _normal_value(lines: list[str]) -> str:
    stripped = [line.rstrip() for line in lines]
    return "\n".join(stripped).strip("\n")


_VALUE = st.lists(_VALUE_LINE, max_size=6).map(_normal_value)
_FIELD_NAME = st.one_of(
    st.sampled_from(STANDARD_FIELDS),
    _NAME.map(str.strip).filter(bool).map(lambda n: _STANDARD.get(n.casefold(), n)),
)


@st.composite
def _documents(draw: st.DrawFn) -> tuple[list[Entry], list[ChecklistEntry]]:
    numbers = draw(st.lists(st.integers(0, 99_999), unique=True, max_size=8))
    sections = draw(
        st.lists(
            _ONE_LINE.filter(lambda s: s.casefold() != "prevention checklist"),
            min_size=1,
            max_size=3,
        )
    )
    entries = []
    for number in numbers:
        names = draw(
            st.lists(_FIELD_NAME, min_size=1, max_size=5, unique_by=lambda n: n.casefold())
        )
        entries.append(
            Entry(
                id=f"M-{number:03d}",
                title=draw(_ONE_LINE),
                section=draw(st.sampled_from(sections)),
                fields=[(name, draw(_VALUE)) for name in names],
            )
        )
    items = []
    if entries:
        for _ in range(draw(st.integers(0, 4))):
            ids = draw(st.lists(st.sampled_from([e.id for e in entries]), min_size=1, max_size=3))
            items.append(
                ChecklistEntry(
                    title=draw(_NAME.map(str.strip).filter(bool)),
                    text=draw(_PLAIN.map(str.strip)),
                    mistake_ids=ids,
                    checked=draw(st.booleans()),
                )
            )
    return entries, items


# No shrink phase: shrinking this composite takes minutes, past the 120 s test timeout,
# which would hide the failing example altogether.
@settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
)
@given(_documents())
def test_render_then_parse_gives_the_same_entries(
    document: tuple[list[Entry], list[ChecklistEntry]],
) -> None:
    entries, items = document
    parsed = parse_markdown(render_markdown(entries, items).encode("utf-8"))
    assert parsed.problems == []
    order = list(dict.fromkeys(entry.section for entry in entries))
    grouped = sorted(entries, key=lambda entry: order.index(entry.section))
    assert parsed.entries == grouped
    assert parsed.checklist == items


# --------------------------------------------------------------------------- problems

GOOD = ("### M-001: Good entry", "**When:** always", "")


def test_invalid_utf8_names_the_line_and_stops() -> None:
    data = doc("## Category: A", *GOOD).encode() + b"**Fix:** caf\xe9\n"
    parsed = parse_markdown(data)
    assert parsed.entries == []
    assert parsed.checklist == []
    assert len(parsed.problems) == 1
    assert parsed.problems[0].line == 5
    assert "not valid UTF-8" in parsed.problems[0].message


def test_entry_without_id() -> None:
    parsed = parse_markdown(doc("## Category: A", "### Something", "**When:** x", "", *GOOD))
    assert messages(parsed) == ["line 2: entry without id: 'Something'"]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_duplicate_id_keeps_the_first() -> None:
    parsed = parse_markdown(
        doc("## Category: A", *GOOD, "### M-001: Again", "**When:** second", "")
    )
    assert messages(parsed) == ["line 5: duplicate id M-001 (first at line 2)"]
    assert [(e.id, e.title) for e in parsed.entries] == [("M-001", "Good entry")]


def test_checklist_item_with_unknown_id() -> None:
    text = doc(
        "## Prevention Checklist",
        "- [ ] **Known:** fine. (M-001)",
        "- [ ] **Stranger:** names a missing entry. (M-001, M-099)",
        "## Category: A",
        *GOOD,
    )
    parsed = parse_markdown(text)
    assert messages(parsed) == ["line 3: checklist item 'Stranger' names unknown id M-099"]
    assert [item.title for item in parsed.checklist] == ["Known"]
    assert [e.id for e in parsed.entries] == ["M-001"]
    # an id known elsewhere (the database) is fine
    parsed = parse_markdown(text, known_ids={"M-099"})
    assert parsed.problems == []
    assert parsed.checklist[1] == ChecklistEntry(
        "Stranger", "names a missing entry.", ["M-001", "M-099"]
    )


def test_checklist_item_without_ids_or_title() -> None:
    parsed = parse_markdown(
        doc(
            "## Prevention Checklist",
            "- [ ] **No ids:** forgot the link (see docs)",
            "- [x] No title here. (M-001)",
            "- [ ] **Bad id:** short. (M-01)",
            "- [ ] **Fine:** text. (M-001)",
            "## Category: A",
            *GOOD,
        )
    )
    assert messages(parsed) == [
        "line 2: checklist item 'No ids' has no trailing (M-...) ids",
        "line 3: checklist item without a **Title:** part: 'No title here. (M-001)'",
        "line 4: checklist item 'Bad id' has malformed id 'M-01'",
    ]
    assert parsed.checklist == [ChecklistEntry("Fine", "text.", ["M-001"])]


def test_checklist_section_skips_fences_and_reports_entry_headings() -> None:
    parsed = parse_markdown(
        doc(
            "## Prevention Checklist",
            "- [ ] **Real:** text. (M-001)",
            "```",
            "- [ ] **Example:** not an item. (M-999)",
            "```",
            "### M-002: Misplaced entry",
            "**When:** here",
            "## Category: A",
            *GOOD,
        )
    )
    assert messages(parsed) == [
        "line 6: entry heading in the checklist section: 'M-002: Misplaced entry'"
    ]
    assert parsed.checklist == [ChecklistEntry("Real", "text.", ["M-001"])]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_entry_without_fields() -> None:
    parsed = parse_markdown(doc("## Category: A", "### M-002: Empty", "", *GOOD))
    assert messages(parsed) == ["line 2: entry M-002 has no fields"]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_entry_without_title() -> None:
    parsed = parse_markdown(doc("## Category: A", "### M-002:", "**When:** x", *GOOD))
    assert messages(parsed) == ["line 2: entry M-002 has no title"]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_repeated_field_excludes_the_entry() -> None:
    parsed = parse_markdown(
        doc("## Category: A", "### M-002: Twice", "**Fix:** a", "", "**fix:** b", *GOOD)
    )
    assert messages(parsed) == ["line 5: entry M-002 repeats field 'Fix' (first at line 3)"]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_unclosed_fence_in_a_value() -> None:
    parsed = parse_markdown(
        doc("## Category: A", *GOOD, "### M-002: Open", "**Fix:**", "```python", "x = 1", *GOOD)
    )
    assert messages(parsed) == ["line 7: unclosed code fence ``` (runs to the end of file)"]
    assert [e.id for e in parsed.entries] == ["M-001"]  # M-002 swallowed the rest


def test_unclosed_fence_outside_entries() -> None:
    parsed = parse_markdown(doc("## Category: A", *GOOD, "## Template", "~~~", "### M-000: x"))
    assert messages(parsed) == ["line 6: unclosed code fence ~~~ (runs to the end of file)"]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_field_after_horizontal_rule_is_reported() -> None:
    parsed = parse_markdown(doc("## Category: A", *GOOD, "---", "", "**Fix:** lost"))
    assert messages(parsed) == ["line 7: field 'Fix' after the '---' at line 5 belongs to no entry"]
    assert parsed.entries[0].fields == [("When", "always")]


def test_problems_sorted_by_line_and_valid_rest_returned() -> None:
    parsed = parse_markdown(
        doc(
            "## Prevention Checklist",
            "- [ ] **Late:** names a missing id. (M-404)",
            "## Category: A",
            "### M-003: Empty",
            "### Nameless",
            *GOOD,
        )
    )
    assert [p.line for p in parsed.problems] == [2, 4, 5]
    assert [e.id for e in parsed.entries] == ["M-001"]


def test_problem_str() -> None:
    assert str(Problem(41, "duplicate id M-012 (first at line 40)")) == (
        "line 41: duplicate id M-012 (first at line 40)"
    )


# --------------------------------------------------------------------------- tolerance


def test_crlf_and_bom_give_the_same_result() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    plain = parse_markdown(text)
    crlf = parse_markdown(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert crlf.problems == []
    assert crlf.entries == plain.entries
    assert crlf.checklist == plain.checklist
    assert [e.line for e in crlf.entries] == [e.line for e in plain.entries]
    assert parse_markdown("\ufeff" + text).entries == plain.entries


def test_preamble_headings_and_fenced_headings_are_not_entries() -> None:
    parsed = parse_markdown(
        doc(
            "# Mistakes",
            "### M-900: in the preamble",
            "**When:** ignored",
            "## Category: A",
            "Section prose, and an example:",
            "```",
            "### M-901: in a fence",
            "```",
            "### M-001: Real",
            "**Fix:** run this:",
            "```sh",
            "## not a heading",
            "### M-902: not an entry",
            "**When:** not a field",
            "---",
            "```",
            "**Prevention:** done",
        )
    )
    assert parsed.problems == []
    assert [e.id for e in parsed.entries] == ["M-001"]
    assert parsed.entries[0].fields == [
        (
            "Fix",
            "run this:\n```sh\n## not a heading\n### M-902: not an entry\n"
            "**When:** not a field\n---\n```",
        ),
        ("Prevention", "done"),
    ]


def test_hostile_but_valid_text() -> None:
    entry = Entry(
        id="M-1234",
        title='Ünïcödé "quotes" *stars* `ticks` # hash — 日本語 🔥',
        section="Category: Ω & <html> 'x'",
        fields=[
            ("Symptom", "loss = **NaN** at step 80; *emphasis*, _under_, \\backslash"),
            (
                "Root Cause 2",
                "**Bold:** not at the start? no:\n  **Indented:** is text\n"
                "  ```\n  indented fence\n  ```",
            ),
            ("Fix", "# a hash line\n> quote\n| a | b |\n\n\n1) one\n   - two"),
            ("Prevention", "tab\tinside and trailing text"),
        ],
    )
    # the value starting with "**Bold:**" would be a field line; keep it off column 0
    entry.fields[1] = ("Root Cause 2", "x " + entry.fields[1][1])
    item = ChecklistEntry('Quote "this"', "a (paren) and *star*: ok.", ["M-1234"], checked=True)
    text = render_markdown([entry], [item])
    parsed = parse_markdown(text.encode("utf-8"))
    assert parsed.problems == []
    assert parsed.entries == [entry]
    assert parsed.checklist == [item]


def test_lenient_headings_and_standard_names() -> None:
    parsed = parse_markdown(
        doc(
            "## Category: A",
            "### M-010 — Dash separated",
            "**root cause:**   lower case  ",
            "**WHEN:** upper case",
            "",
            "---",
            "Prose between entries is ignored.",
            "### M-011",
            "**When:** no title",
        )
    )
    assert messages(parsed) == ["line 8: entry M-011 has no title"]
    assert parsed.entries == [
        Entry(
            "M-010",
            "Dash separated",
            "Category: A",
            [("Root cause", "lower case"), ("When", "upper case")],
        )
    ]
