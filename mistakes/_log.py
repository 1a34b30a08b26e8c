"""Mistakes and checklist items: the catalogue, queries, MISTAKES.md import and export."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, col, select

from memory import InvalidTextError, Store, check_text, open_store

from ._catalogue import (
    BUILTIN_CHECKLIST,
    BUILTIN_MISTAKES,
    CONDUCT_IDS,
    MODEL_CHECKS,
    RULE_LINKS,
)
from ._errors import ImportRejectedError, InvalidInputError, NotFoundError
from ._markdown import ChecklistEntry, Entry, Problem, parse_markdown, render_markdown
from ._models import STANDARD_COLUMNS, ChecklistItem, Mistake

__all__ = [
    "ChecklistView",
    "ImportReport",
    "add_mistake",
    "checklist",
    "ensure_catalogue",
    "export_markdown",
    "get_mistake",
    "import_markdown",
    "list_mistakes",
    "normalise_id",
    "open_log",
]

_BUILTIN_POSITION = 100_000
_ID_RE = re.compile(r"^M-(\d{1,6})$", re.IGNORECASE)
_STANDARD_BY_LOWER = {name.lower(): column for name, column in STANDARD_COLUMNS.items()}


def normalise_id(raw: str) -> str:
    """``m-15`` -> ``M-015``; raises InvalidInputError naming the bad id."""
    m = _ID_RE.match(raw.strip())
    if not m:
        raise InvalidInputError(f"not a mistake id: {raw!r} (expected M-NNN, e.g. M-015)")
    return f"M-{int(m.group(1)):03d}"


def open_log(path: str | Path) -> Store:
    """Open the store with the mistake-log tables and the built-in catalogue in place."""
    store = open_store(path)
    with store.write() as session:
        ensure_catalogue(session=session)
    return store


def ensure_catalogue(*, session: Session) -> int:
    """Insert built-in mistakes and checklist items that are missing; returns how many."""
    have = set(session.exec(select(Mistake.id)).all())
    added = 0
    for i, b in enumerate(BUILTIN_MISTAKES):
        if b.id not in have:
            session.add(
                Mistake(
                    id=b.id,
                    title=b.title,
                    section=b.section,
                    when=b.when,
                    symptom=b.symptom,
                    root_cause=b.root_cause,
                    fix=b.fix,
                    prevention=b.prevention,
                    position=_BUILTIN_POSITION + i,
                    source="builtin",
                )
            )
            added += 1
    session.flush()  # incidents and checklist items may reference these ids
    titles = set(session.exec(select(ChecklistItem.title)).all())
    for i, item in enumerate(BUILTIN_CHECKLIST):
        if item.title not in titles:
            session.add(
                ChecklistItem(
                    title=item.title,
                    text=item.text,
                    mistake_ids=list(item.mistake_ids),
                    rule=item.rule,
                    position=_BUILTIN_POSITION + i,
                    source="builtin",
                )
            )
            added += 1
    return added


def _ordered(session: Session) -> list[Mistake]:
    return list(session.exec(select(Mistake).order_by(col(Mistake.position), col(Mistake.key))))


def list_mistakes(*, session: Session, category: str | None = None) -> list[Mistake]:
    rows = _ordered(session)
    if category is None:
        return rows
    want = category.strip().casefold()
    return [m for m in rows if want in (m.category.casefold(), m.section.casefold())]


def get_mistake(*, session: Session, mistake_id: str) -> Mistake:
    mid = normalise_id(mistake_id)
    row = session.exec(select(Mistake).where(Mistake.id == mid)).first()
    if row is None:
        raise NotFoundError(f"no mistake {mid} (see `harness mistakes list`)")
    return row


def _next_id(session: Session) -> str:
    numbers = [int(m[2:]) for m in session.exec(select(Mistake.id)).all() if _ID_RE.match(m)]
    return f"M-{max(numbers, default=0) + 1:03d}"


def add_mistake(
    *,
    session: Session,
    title: str,
    mistake_id: str | None = None,
    category: str = "General",
    fields: Mapping[str, str] | None = None,
) -> Mistake:
    """Add a new entry; standard field names map to columns, others become extra fields.

    Text that is not valid Unicode (a lone surrogate) is refused with InvalidInputError
    naming the field.
    """
    _check_unicode(title, "the title")
    _check_unicode(category, "the category")
    for name, value in (fields or {}).items():
        _check_unicode(name, "a field name")
        _check_unicode(value, f"field {name!r}")
    if not title.strip():
        raise InvalidInputError("a mistake needs a non-empty title")
    mid = normalise_id(mistake_id) if mistake_id else _next_id(session)
    if session.exec(select(Mistake).where(Mistake.id == mid)).first() is not None:
        raise InvalidInputError(
            f"{mid} exists already; edit MISTAKES.md and import it to change it"
        )
    row = Mistake(id=mid, title=title.strip(), section=f"Category: {category.strip()}")
    _apply_fields(row, list((fields or {}).items()))
    last = session.exec(select(Mistake.position).order_by(col(Mistake.position).desc())).first()
    row.position = min(last or 0, _BUILTIN_POSITION - 1) + 1
    session.add(row)
    session.flush()
    return row


def _check_unicode(text: str, what: str) -> None:
    try:
        check_text(text, what)
    except InvalidTextError as exc:
        raise InvalidInputError(str(exc)) from None


def _apply_fields(row: Mistake, fields: Sequence[tuple[str, str]]) -> None:
    for standard in STANDARD_COLUMNS.values():
        setattr(row, standard, "")
    extra: list[list[str]] = []
    for name, value in fields:
        column = _STANDARD_BY_LOWER.get(name.strip().lower())
        if column is not None:
            setattr(row, column, value)
        else:
            extra.append([name, value])
    row.extra = extra


# -- checklist --------------------------------------------------------------------------


#: how a checklist item is kept: by a supervisor rule while jobs run, by a model check
#: before training, by conduct (only a person or an agent can: the brief lists it), or by
#: nobody yet (manual)
ENFORCEMENTS = ("rule", "check", "conduct", "manual")


@dataclass(frozen=True)
class ChecklistView:
    item: ChecklistItem
    enforced_by: tuple[str, ...]  # rule names; empty for a manual item

    @property
    def enforcement(self) -> str:
        """One of :data:`ENFORCEMENTS`."""
        if any(r not in MODEL_CHECKS for r in self.enforced_by):
            return "rule"
        if self.enforced_by:
            return "check"
        ids = self.item.mistake_ids
        return "conduct" if ids and all(i in CONDUCT_IDS for i in ids) else "manual"

    def as_dict(self) -> dict[str, object]:
        return {
            **self.item.as_dict(),
            "enforced_by": list(self.enforced_by),
            "enforcement": self.enforcement,
        }


def checklist(*, session: Session) -> list[ChecklistView]:
    """Every item with the rules that enforce it (its own, or any rule guarding its ids)."""
    items = session.exec(
        select(ChecklistItem).order_by(col(ChecklistItem.position), col(ChecklistItem.key))
    ).all()
    out = []
    for item in items:
        rules = [item.rule] if item.rule else []
        rules += [
            r
            for r, ids in RULE_LINKS.items()
            if set(ids) & set(item.mistake_ids) and r not in rules
        ]
        out.append(ChecklistView(item, tuple(rules)))
    return out


# -- MISTAKES.md ------------------------------------------------------------------------


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    checklist_added: int = 0
    checklist_updated: int = 0
    problems: list[Problem] = field(default_factory=list)  # skipped under --partial


def import_markdown(
    store: Store, data: bytes | str, *, source: str = "MISTAKES.md", partial: bool = False
) -> ImportReport:
    """Upsert every entry and checklist item of a MISTAKES.md file, by id and by title.

    The whole file is one transaction: with any problem and ``partial=False`` nothing is
    written and :class:`ImportRejectedError` lists the problems with their lines.
    """
    report = ImportReport()
    with store.write() as session:
        existing = {m.id: m for m in session.exec(select(Mistake)).all()}
        parsed = parse_markdown(data, known_ids=set(existing))
        if parsed.problems and not partial:
            raise ImportRejectedError(source, parsed.problems)
        report.problems = list(parsed.problems)
        for position, entry in enumerate(parsed.entries):
            _upsert_entry(session, existing.get(entry.id), entry, position, report)
        session.flush()
        items = {c.title: c for c in session.exec(select(ChecklistItem)).all()}
        for position, check in enumerate(parsed.checklist):
            _upsert_item(session, items.get(check.title), check, position, report)
    return report


def _upsert_entry(
    session: Session, row: Mistake | None, entry: Entry, position: int, report: ImportReport
) -> None:
    if row is None:
        row = Mistake(id=entry.id, title=entry.title, section=entry.section, position=position)
        _apply_fields(row, entry.fields)
        session.add(row)
        report.added.append(entry.id)
        return
    before = (row.title, row.section, row.fields(), row.position, row.source)
    row.title, row.section, row.position, row.source = entry.title, entry.section, position, "user"
    _apply_fields(row, entry.fields)
    if (row.title, row.section, row.fields(), row.position, row.source) == before:
        report.unchanged.append(entry.id)
    else:
        row.updated_at = time.time()
        session.add(row)
        report.updated.append(entry.id)


def _upsert_item(
    session: Session,
    row: ChecklistItem | None,
    check: ChecklistEntry,
    position: int,
    report: ImportReport,
) -> None:
    ids = [normalise_id(i) for i in check.mistake_ids]
    if row is None:
        session.add(
            ChecklistItem(
                title=check.title,
                text=check.text,
                mistake_ids=ids,
                checked=check.checked,
                position=position,
            )
        )
        report.checklist_added += 1
        return
    before = (row.text, list(row.mistake_ids), row.checked, row.position)
    row.text, row.mistake_ids, row.checked, row.position = check.text, ids, check.checked, position
    if (row.text, list(row.mistake_ids), row.checked, row.position) != before:
        row.source = "user"
        session.add(row)
        report.checklist_updated += 1


def export_markdown(*, session: Session, title: str = "Mistakes") -> str:
    """The whole log (built-in and user entries, and the checklist) as MISTAKES.md."""
    entries = [
        Entry(id=m.id, title=m.title, section=m.section, fields=m.fields())
        for m in _ordered(session)
    ]
    items = [
        ChecklistEntry(
            title=v.item.title,
            text=v.item.text,
            mistake_ids=list(v.item.mistake_ids),
            checked=v.item.checked,
        )
        for v in checklist(session=session)
    ]
    return render_markdown(entries, items, title=title)
