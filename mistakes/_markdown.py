"""MISTAKES.md: parse the human-edited file and render it back (DESIGN section 6).

Pure functions, no database: :func:`parse_markdown` turns the file into entries, checklist
items and a list of problems (each with its 1-based line); :func:`render_markdown` writes
entries and items back in the same format.

The format::

    # Mistakes                                  <- preamble (ignored up to the first "## ")

    ## Prevention Checklist
    - [ ] **Title:** text. (M-001, M-014)       <- may wrap onto continuation lines
    - [x] **Title:** text. (M-015)

    ## Category: GPU                            <- any other "## " section holds entries
    ### M-015: Title
    **When:** value                             <- "**Name:**" at the start of a line
    **Fix:**                                       starts a field; a value runs until the
    - bullets, 1. numbered points, blank lines,    next field line, "### "/"## " heading
      fenced code blocks (kept verbatim)           or "---" line

    ## Template
    ```                                         <- a fence outside an entry is skipped
    ### M-000: not an entry
    ```

Structural lines (headings, field lines, ``---``) count only at column 0 and outside
fenced code blocks. Text in an entry before its first field becomes a field named
``Notes``. Standard field names are matched case-insensitively and spelled as in
:data:`STANDARD_FIELDS`; other names are kept as written.

Round trip: ``parse_markdown(render_markdown(entries, items))`` gives back the same
entries and items (``line`` is not compared), with entries grouped by section in order of
each section's first appearance, provided the input is in normal form (titles, names and
checklist text stripped and on one line; values without leading/trailing blank lines or
trailing spaces) and avoids what the format cannot express:

- a value line that starts at column 0 with ``**Name:**``, ``## ``, ``### `` or ``---``
  (outside a fenced block) ends the value there;
- a value with an unbalanced fence swallows what follows;
- a section named "Prevention Checklist" is read back as the checklist.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from memory import clean_text, clip

__all__ = [
    "ID_RE",
    "STANDARD_FIELDS",
    "ChecklistEntry",
    "Entry",
    "ParsedFile",
    "Problem",
    "parse_markdown",
    "render_markdown",
]

STANDARD_FIELDS = ("When", "Symptom", "Root cause", "Fix", "Prevention")
ID_RE = re.compile(r"M-[0-9]{3,}")
"""A mistake id such as ``M-015``; use ``ID_RE.fullmatch(text)`` to validate one."""

CHECKLIST_SECTION = "Prevention Checklist"
NOTES_FIELD = "Notes"

_STANDARD_BY_KEY = {name.casefold(): name for name in STANDARD_FIELDS}
_H2_RE = re.compile(r"##(?:[ \t]+(.*)|[ \t]*)")
_H3_RE = re.compile(r"###(?:[ \t]+(.*)|[ \t]*)")
_RULE_RE = re.compile(r"-{3,}[ \t]*")
_FIELD_RE = re.compile(r"\*\*([^*\s][^*]*?):\*\*[ \t]*(.*)")
_ENTRY_TITLE_RE = re.compile(r"(M-[0-9]{3,})(?![0-9])[ \t]*(?:[:\-–—][ \t]*|[ \t]|$)(.*)")
_FENCE_OPEN_RE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_FENCE_CLOSE_RE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")
_ITEM_RE = re.compile(r"[ \t]*[-*+][ \t]+\[([ xX])\](?:[ \t]+(.*)|[ \t]*)")
_ITEM_TITLE_RE = re.compile(r"\*\*([^*\s][^*]*?):\*\*(.*)")
_ITEM_IDS_RE = re.compile(r"(.*?)[ \t]*\(([^()]*)\)[ \t]*")
_BLOCK_START_RE = re.compile(r"[ \t>#|`~*+-]|[0-9]+[.)]")


@dataclass
class Entry:
    """One mistake. Equality ignores ``line`` (where it came from)."""

    id: str
    title: str
    section: str
    fields: list[tuple[str, str]]
    line: int = field(default=0, compare=False)

    def get(self, name: str) -> str | None:
        """The value of field ``name`` (case-insensitive), or None when absent."""
        key = name.casefold()
        return next((value for n, value in self.fields if n.casefold() == key), None)


@dataclass
class ChecklistEntry:
    """One prevention checklist item. Equality ignores ``line``."""

    title: str
    text: str
    mistake_ids: list[str]
    checked: bool = False
    line: int = field(default=0, compare=False)


@dataclass
class Problem:
    """Something wrong in the file, at a 1-based line."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedFile:
    """Valid entries and items, and every problem found (sorted by line)."""

    entries: list[Entry]
    checklist: list[ChecklistEntry]
    problems: list[Problem]


# --------------------------------------------------------------------------- parse


def parse_markdown(data: bytes | str, *, known_ids: Collection[str] = ()) -> ParsedFile:
    """Parse MISTAKES.md text; never raises on content.

    ``known_ids`` are ids that exist elsewhere (e.g. in the database), so a checklist item
    may name them without the file defining them.
    """
    text, problem = _decode(data)
    if problem is not None:
        return ParsedFile(entries=[], checklist=[], problems=[problem])
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return _Parser(lines).parse(set(known_ids))


def _decode(data: bytes | str) -> tuple[str, Problem | None]:
    if isinstance(data, str):
        cleaned = clean_text(data)
        if cleaned != data:  # a lone surrogate: no encoder (and no database) takes it
            at = next(i for i, (a, b) in enumerate(zip(data, cleaned, strict=True)) if a != b)
            line = data.count("\n", 0, at) + 1
            code = f"U+{ord(data[at]):04X}"
            return "", Problem(line, f"not valid Unicode ({code}, a lone surrogate); nothing read")
        return data.removeprefix("\ufeff"), None
    raw = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        return "", Problem(line, f"not valid UTF-8 (byte 0x{bad}); nothing was read")


@dataclass
class _DraftField:
    name: str
    line: int
    lines: list[str]


@dataclass
class _DraftEntry:
    id: str | None
    title: str
    section: str
    line: int
    notes: list[str] = field(default_factory=list)
    notes_line: int = 0
    fields: list[_DraftField] = field(default_factory=list)
    valid: bool = True
    closed_at: int = 0  # line of a "---" that ended the entry


@dataclass
class _DraftItem:
    line: int
    checked: bool
    parts: list[str]


class _Parser:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.problems: list[Problem] = []
        self.entries: list[Entry] = []
        self.items: list[_DraftItem] = []
        self.first_line_of_id: dict[str, int] = {}
        self.fence_of: list[tuple[int, bool] | None] = self._find_fences()

    def _find_fences(self) -> list[tuple[int, bool] | None]:
        """For each line: None, or (opening line, closed?) of the fence it belongs to."""
        spans: list[tuple[int, int, bool]] = []
        opener: tuple[int, str] | None = None
        for index, line in enumerate(self.lines):
            if opener is None:
                match = _FENCE_OPEN_RE.fullmatch(line)
                if match and not (match[1][0] == "`" and "`" in match[2]):
                    opener = (index, match[1])
            else:
                match = _FENCE_CLOSE_RE.fullmatch(line)
                start, marker = opener
                if match and match[1][0] == marker[0] and len(match[1]) >= len(marker):
                    spans.append((start, index, True))
                    opener = None
        if opener is not None:
            start, marker = opener
            spans.append((start, len(self.lines) - 1, False))
            self._problem(start + 1, f"unclosed code fence {marker} (runs to the end of file)")
        fence_of: list[tuple[int, bool] | None] = [None] * len(self.lines)
        for start, end, closed in spans:
            for index in range(start, end + 1):
                fence_of[index] = (start + 1, closed)
        return fence_of

    def _problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message))

    def parse(self, known_ids: set[str]) -> ParsedFile:
        section: str | None = None  # None while in the preamble
        entry: _DraftEntry | None = None
        item: _DraftItem | None = None
        for index, line in enumerate(self.lines):
            lineno = index + 1
            fence = self.fence_of[index]
            if fence is None:
                h2 = _H2_RE.fullmatch(line)
                h3 = None if h2 else _H3_RE.fullmatch(line)
                if h2 is not None or h3 is not None:
                    self._finish_entry(entry)
                    self._finish_item(item)
                    entry, item = None, None
                    if h2 is not None:
                        section = (h2[1] or "").strip()
                    elif h3 is not None and section is not None:
                        heading = (h3[1] or "").strip()
                        if _is_checklist(section):
                            self._problem(
                                lineno, f"entry heading in the checklist section: {heading!r}"
                            )
                        else:
                            entry = self._start_entry(heading, section, lineno)
                    continue
            if section is None:
                continue
            if _is_checklist(section):
                item = self._checklist_line(item, line, lineno, fenced=fence is not None)
            elif entry is not None:
                self._entry_line(entry, line, lineno, fence)
        self._finish_entry(entry)
        self._finish_item(item)
        checklist = self._resolve_items(known_ids | {e.id for e in self.entries})
        self.problems.sort(key=lambda p: p.line)
        return ParsedFile(entries=self.entries, checklist=checklist, problems=self.problems)

    # entries

    def _start_entry(self, heading: str, section: str, lineno: int) -> _DraftEntry:
        match = _ENTRY_TITLE_RE.fullmatch(heading)
        if match is None:
            self._problem(lineno, f"entry without id: {heading!r}")
            return _DraftEntry(id=None, title=heading, section=section, line=lineno, valid=False)
        mistake_id, title = match[1], match[2].strip()
        entry = _DraftEntry(id=mistake_id, title=title, section=section, line=lineno)
        first = self.first_line_of_id.setdefault(mistake_id, lineno)
        if first != lineno:
            self._problem(lineno, f"duplicate id {mistake_id} (first at line {first})")
            entry.valid = False
        elif not title:
            self._problem(lineno, f"entry {mistake_id} has no title")
            entry.valid = False
        return entry

    def _entry_line(
        self, entry: _DraftEntry, line: str, lineno: int, fence: tuple[int, bool] | None
    ) -> None:
        if entry.id is None:
            return  # the body of an entry without id: already reported
        if fence is None:
            if _RULE_RE.fullmatch(line):
                entry.closed_at = entry.closed_at or lineno
                return
            field_match = _FIELD_RE.fullmatch(line)
            if field_match:
                name = _canonical_name(field_match[1])
                if entry.closed_at:
                    self._problem(
                        lineno,
                        f"field {name!r} after the '---' at line {entry.closed_at} "
                        f"belongs to no entry",
                    )
                    return
                entry.fields.append(_DraftField(name, lineno, [field_match[2]]))
                return
        if entry.closed_at:
            return  # prose between entries
        if fence is not None and not fence[1]:
            entry.valid = False  # swallowed by an unclosed fence: already reported
        if entry.fields:
            entry.fields[-1].lines.append(line)
        else:
            if not entry.notes_line and line.strip():
                entry.notes_line = lineno
            entry.notes.append(line)

    def _finish_entry(self, draft: _DraftEntry | None) -> None:
        if draft is None or draft.id is None:
            return
        fields: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        drafts = list(draft.fields)
        notes = _normalize(draft.notes)
        if notes:
            drafts.insert(0, _DraftField(NOTES_FIELD, draft.notes_line, [notes]))
        valid = draft.valid
        for item in drafts:
            key = item.name.casefold()
            if key in seen:
                self._problem(
                    item.line,
                    f"entry {draft.id} repeats field {item.name!r} (first at line {seen[key]})",
                )
                valid = False
                continue
            seen[key] = item.line
            fields.append((item.name, _normalize(item.lines)))
        if not fields and draft.valid:
            self._problem(draft.line, f"entry {draft.id} has no fields")
            valid = False
        if valid:
            self.entries.append(Entry(draft.id, draft.title, draft.section, fields, draft.line))

    # checklist

    def _checklist_line(
        self, item: _DraftItem | None, line: str, lineno: int, *, fenced: bool
    ) -> _DraftItem | None:
        if fenced or not line.strip():
            self._finish_item(item)
            return None
        start = _ITEM_RE.fullmatch(line)
        if start:
            self._finish_item(item)
            return _DraftItem(lineno, start[1] in "xX", [(start[2] or "").strip()])
        if item is not None:
            item.parts.append(line.strip())
        return item

    def _finish_item(self, item: _DraftItem | None) -> None:
        if item is not None:
            self.items.append(item)

    def _resolve_items(self, ids: set[str]) -> list[ChecklistEntry]:
        result = []
        for draft in self.items:
            parsed = self._parse_item(draft, ids)
            if parsed is not None:
                result.append(parsed)
        return result

    def _parse_item(self, draft: _DraftItem, ids: set[str]) -> ChecklistEntry | None:
        text = " ".join(part for part in draft.parts if part)
        titled = _ITEM_TITLE_RE.fullmatch(text)
        if titled is None:
            self._problem(
                draft.line, f"checklist item without a **Title:** part: {clip(text, 60)!r}"
            )
            return None
        title = titled[1].strip()
        tail = _ITEM_IDS_RE.fullmatch(titled[2].strip())
        names = [n.strip() for n in tail[2].split(",")] if tail else []
        if tail is None or not any(n.startswith("M-") for n in names):
            self._problem(draft.line, f"checklist item {title!r} has no trailing (M-...) ids")
            return None
        ok = True
        for name in names:
            if not ID_RE.fullmatch(name):
                self._problem(draft.line, f"checklist item {title!r} has malformed id {name!r}")
                ok = False
            elif name not in ids:
                self._problem(draft.line, f"checklist item {title!r} names unknown id {name}")
                ok = False
        if not ok:
            return None
        return ChecklistEntry(title, tail[1].strip(), names, draft.checked, draft.line)


def _is_checklist(section: str) -> bool:
    return section.casefold() == CHECKLIST_SECTION.casefold()


def _canonical_name(name: str) -> str:
    name = name.strip()
    return _STANDARD_BY_KEY.get(name.casefold(), name)


def _normalize(lines: Iterable[str]) -> str:
    """Join value lines: trailing spaces off each line, blank lines off both ends."""
    stripped = "\n".join(lines).split("\n")
    stripped = [line.rstrip() for line in stripped]
    while stripped and not stripped[0]:
        stripped.pop(0)
    while stripped and not stripped[-1]:
        stripped.pop()
    return "\n".join(stripped)


# --------------------------------------------------------------------------- render

_PREAMBLE = (
    "Past mistakes and how to prevent them. Checklist items name the mistakes they guard "
    "against; each entry is `### M-NNN: Title` followed by `**Field:** value` paragraphs."
)

_TEMPLATE = """\
```markdown
### M-000: Short title of the mistake

**When:** what was being done when it happened

**Symptom:** what was seen (numbers, not adjectives)

**Root cause:** why it happened

**Fix:** what was done about it
- sub-points are fine

**Prevention:** the check that stops it happening again
```"""


def render_markdown(
    entries: Sequence[Entry], checklist: Sequence[ChecklistEntry], *, title: str = "Mistakes"
) -> str:
    """Write entries and checklist items as MISTAKES.md (see the module docstring)."""
    out = [f"# {_one_line(title)}", "", _PREAMBLE, "", f"## {CHECKLIST_SECTION}", ""]
    for item in checklist:
        box = "x" if item.checked else " "
        text = _one_line(item.text)
        body = f"{text} " if text else ""
        out.append(f"- [{box}] **{item.title}:** {body}({', '.join(item.mistake_ids)})")
    if checklist:
        out.append("")
    sections: dict[str, list[Entry]] = {}
    for entry in entries:
        sections.setdefault(entry.section, []).append(entry)
    for section, members in sections.items():
        out += [f"## {section}".rstrip(), ""]
        for entry in members:
            out += [f"### {entry.id}: {entry.title}".rstrip(), ""]
            for name, value in entry.fields:
                out += [*_render_field(name, value), ""]
    out += ["## Template", "", "Copy this block to add an entry (it is not an entry).", ""]
    out += [_TEMPLATE, ""]
    return "\n".join(out)


def _render_field(name: str, value: str) -> list[str]:
    lines = value.split("\n")
    first = lines[0]
    if not first:
        return [f"**{name}:**", *lines[1:]]
    if _BLOCK_START_RE.match(first):
        return [f"**{name}:**", *lines]
    return [f"**{name}:** {first}", *lines[1:]]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.split("\n") if part.strip())
