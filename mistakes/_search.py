"""Full-text search over mistakes and incidents (SQLite FTS5, bm25 ranking).

User text never reaches FTS5 syntax: it is cut into words, each word becomes a quoted
prefix term (``"util"*``), so operators, parentheses, quotes and stray ``*`` or ``-``
are just characters. All words must match; when that finds nothing, any word may match.
Mistakes are ranked by bm25 over the whole catalogue; incidents by bm25 among the newest
``INCIDENT_WINDOW`` matching incidents.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

__all__ = ["SearchHit", "fts_query", "search"]

_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_TERMS = 16
_ID = re.compile(r"^\s*M-(\d{1,6})\s*$", re.IGNORECASE)
#: Incidents are ranked by bm25 among the newest this-many matches: bm25 costs a few
#: microseconds per matching row, and a word found in every incident of a 100k log
#: would otherwise make one search take half a second. Recency is relevance here.
INCIDENT_WINDOW = 2000


@dataclass(frozen=True)
class SearchHit:
    kind: str  # "mistake" | "incident"
    id: str  # "M-015" or the incident number as text
    title: str
    snippet: str
    score: float  # bm25: lower is better

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def fts_query(user_text: str, *, any_word: bool = False) -> str | None:
    """A safe FTS5 MATCH expression for ``user_text``, or None when it has no words."""
    words = _WORD.findall(user_text)[:_MAX_TERMS]
    if not words:
        return None
    joiner = " OR " if any_word else " "
    # A one- or two-letter prefix matches most of the index and costs the most: such short
    # words match whole tokens only.
    return joiner.join(f'"{w}"*' if len(w) > 2 else f'"{w}"' for w in words)


# ``ORDER BY rank`` lets FTS5 sort before it computes snippet() for the rows it returns;
# the weights (bm25 per column) are passed through the hidden ``rank`` column.
_MISTAKE_SQL = text(
    "SELECT m.id, m.title, f.snip, f.rank FROM ("
    "  SELECT rowid, snippet(mistake_fts, 3, '[', ']', '…', 12) AS snip, rank"
    "  FROM mistake_fts WHERE mistake_fts MATCH :q AND rank MATCH 'bm25(3.0, 5.0, 1.0, 1.0)'"
    "  ORDER BY rank LIMIT :n"
    ") AS f JOIN mistake m ON m.key = f.rowid ORDER BY f.rank"
)
_INCIDENT_FLOOR_SQL = text(
    "SELECT rowid FROM incident_fts WHERE incident_fts MATCH :q "
    "ORDER BY rowid DESC LIMIT 1 OFFSET :skip"
)
_INCIDENT_SQL = text(
    "SELECT i.id, i.summary, f.snip, f.rank FROM ("
    "  SELECT rowid, snippet(incident_fts, 0, '[', ']', '…', 12) AS snip, rank"
    "  FROM incident_fts WHERE incident_fts MATCH :q AND rowid >= :floor"
    "  AND rank MATCH 'bm25(4.0, 2.0, 3.0, 2.0, 1.0, 0.5)'"
    "  ORDER BY rank LIMIT :n"
    ") AS f JOIN incident i ON i.id = f.rowid ORDER BY f.rank"
)


def _run(session: Session, user_text: str, limit: int, kinds: tuple[str, ...]) -> list[SearchHit]:
    hits: list[SearchHit] = []
    for any_word in (False, True):
        q = fts_query(user_text, any_word=any_word)
        if q is None:
            return []
        if "mistake" in kinds:
            rows = session.execute(_MISTAKE_SQL, {"q": q, "n": limit}).all()
            hits += [SearchHit("mistake", r[0], r[1], r[2], float(r[3])) for r in rows]
        if "incident" in kinds:
            floor = session.execute(
                _INCIDENT_FLOOR_SQL, {"q": q, "skip": INCIDENT_WINDOW - 1}
            ).scalar()
            params = {"q": q, "n": limit, "floor": floor or 0}
            rows = session.execute(_INCIDENT_SQL, params).all()
            hits += [SearchHit("incident", str(r[0]), r[1], r[2], float(r[3])) for r in rows]
        if hits:
            break
    return hits


def search(
    *,
    session: Session,
    query: str,
    limit: int = 20,
    kinds: tuple[str, ...] = ("mistake", "incident"),
) -> list[SearchHit]:
    """Best matches first. A query that is exactly a mistake id puts that entry on top."""
    hits = _run(session, query, limit, kinds)
    hits.sort(key=lambda h: h.score)
    m = _ID.match(query)
    if m and "mistake" in kinds:
        mid = f"M-{int(m.group(1)):03d}"
        exact = [h for h in hits if h.kind == "mistake" and h.id == mid]
        if not exact:
            row = session.execute(text("SELECT id, title FROM mistake WHERE id = :i"), {"i": mid})
            found = row.first()
            exact = [SearchHit("mistake", found[0], found[1], "", -1e9)] if found else []
        hits = exact + [h for h in hits if h not in exact]
    return hits[:limit]
