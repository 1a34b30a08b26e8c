"""Tables of the mistake log (DESIGN section 6) and their full-text indexes.

The FTS5 tables are ordinary (not external-content) tables kept in step by triggers,
keyed by the integer rowid of the row they index, so a VACUUM can never desynchronise
them and updates delete by rowid instead of scanning.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import DDL, JSON, Column, event
from sqlmodel import Field, SQLModel

__all__ = ["ChecklistItem", "Incident", "Mistake"]

STANDARD_COLUMNS = {
    "When": "when",
    "Symptom": "symptom",
    "Root cause": "root_cause",
    "Fix": "fix",
    "Prevention": "prevention",
}


class Mistake(SQLModel, table=True):
    """One catalogued mistake. ``id`` is the human id (``M-015``); ``key`` is internal."""

    key: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, index=True)
    title: str
    section: str = "Category: General"  # the raw "## " heading the entry lives under
    when: str = ""
    symptom: str = ""
    root_cause: str = ""
    fix: str = ""
    prevention: str = ""
    extra: list[list[str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    position: int = 0
    source: str = "user"  # "builtin" or "user"
    updated_at: float = Field(default_factory=time.time)

    @property
    def category(self) -> str:
        prefix = "Category:"
        return (
            self.section[len(prefix) :].strip() if self.section.startswith(prefix) else self.section
        )

    def fields(self) -> list[tuple[str, str]]:
        """Standard fields that are set, then extra fields, in order."""
        out = [(name, getattr(self, col)) for name, col in STANDARD_COLUMNS.items()]
        return [(k, v) for k, v in out if v] + [(k, v) for k, v in self.extra]

    def as_dict(self) -> dict[str, Any]:
        """The row for JSON output: the category spelled out, extra fields as a mapping."""
        data = self.model_dump(exclude={"key", "position", "updated_at", "extra"})
        return {**data, "category": self.category, "extra": dict(self.extra)}


class ChecklistItem(SQLModel, table=True):
    """A prevention checklist item, linked to mistakes, enforced by a rule or manual."""

    __tablename__ = "checklist_item"

    key: int | None = Field(default=None, primary_key=True)
    title: str = Field(unique=True)
    text: str = ""
    mistake_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    rule: str | None = None
    checked: bool = False
    position: int = 0
    source: str = "user"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(include={"title", "text", "mistake_ids", "rule", "checked"})


class Incident(SQLModel, table=True):
    """Something that went wrong in a run, or was prevented, with the numbers."""

    id: int | None = Field(default=None, primary_key=True)
    ts: float = Field(default_factory=time.time, index=True)
    run_id: str | None = Field(default=None, index=True)
    rule: str = Field(index=True)
    mistake_id: str | None = Field(default=None, foreign_key="mistake.id", index=True)
    severity: str = "warn"  # info | warn | abort | error
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    action: str = ""
    resolved: bool = False
    resolved_at: float | None = None
    resolution_note: str | None = None


_MISTAKE_BODY = (
    "coalesce(new.{c}\"when\",'') || ' ' || coalesce(new.{c}symptom,'') || ' ' || "
    "coalesce(new.{c}root_cause,'') || ' ' || coalesce(new.{c}fix,'') || ' ' || "
    "coalesce(new.{c}prevention,'') || ' ' || coalesce(new.{c}extra,'')"
)


def _mistake_ddl() -> list[DDL]:
    body = _MISTAKE_BODY.replace("new.{c}", "new.")
    ins = (
        "INSERT INTO mistake_fts(rowid, mid, title, section, body) "
        f"VALUES (new.key, new.id, new.title, new.section, {body});"
    )
    return [
        DDL(
            "CREATE VIRTUAL TABLE IF NOT EXISTS mistake_fts USING fts5("
            "mid, title, section, body, tokenize = 'unicode61 remove_diacritics 2')"
        ),
        DDL(f"CREATE TRIGGER IF NOT EXISTS mistake_ai AFTER INSERT ON mistake BEGIN {ins} END"),
        DDL(
            "CREATE TRIGGER IF NOT EXISTS mistake_au AFTER UPDATE ON mistake BEGIN "
            f"DELETE FROM mistake_fts WHERE rowid = old.key; {ins} END"
        ),
        DDL(
            "CREATE TRIGGER IF NOT EXISTS mistake_ad AFTER DELETE ON mistake BEGIN "
            "DELETE FROM mistake_fts WHERE rowid = old.key; END"
        ),
    ]


def _incident_ddl() -> list[DDL]:
    ins = (
        "INSERT INTO incident_fts(rowid, summary, rule, mid, run, action, evidence) VALUES "
        "(new.id, new.summary, new.rule, coalesce(new.mistake_id,''), coalesce(new.run_id,''), "
        "new.action, (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(new.evidence)));"
    )
    return [
        DDL(
            "CREATE VIRTUAL TABLE IF NOT EXISTS incident_fts USING fts5("
            "summary, rule, mid, run, action, evidence, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        ),
        DDL(f"CREATE TRIGGER IF NOT EXISTS incident_ai AFTER INSERT ON incident BEGIN {ins} END"),
        DDL(
            "CREATE TRIGGER IF NOT EXISTS incident_au AFTER UPDATE OF summary, rule, mistake_id, "
            "run_id, action, evidence ON incident BEGIN "
            f"DELETE FROM incident_fts WHERE rowid = old.id; {ins} END"
        ),
        DDL(
            "CREATE TRIGGER IF NOT EXISTS incident_ad AFTER DELETE ON incident BEGIN "
            "DELETE FROM incident_fts WHERE rowid = old.id; END"
        ),
    ]


for _ddl in _mistake_ddl():
    event.listen(Mistake.__table__, "after_create", _ddl)  # type: ignore[attr-defined]
for _ddl in _incident_ddl():
    event.listen(Incident.__table__, "after_create", _ddl)  # type: ignore[attr-defined]
