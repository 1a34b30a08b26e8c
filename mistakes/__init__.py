"""mistakes: the mistake log — catalogue, prevention checklist, incidents, search.

Open it with :func:`open_log` (a :class:`memory.Store` with the catalogue seeded); every
query takes a session as a keyword (``with store.read() as s: list_mistakes(session=s)``).
"""

from ._catalogue import CONDUCT_IDS, MODEL_CHECKS, NONFINITE_ID, RULE_LINKS
from ._errors import ImportRejectedError, InvalidInputError, MistakesError, NotFoundError
from ._incidents import (
    SEVERITIES,
    get_incident,
    list_incidents,
    record_incident,
    resolve_incident,
)
from ._log import (
    ENFORCEMENTS,
    ChecklistView,
    ImportReport,
    add_mistake,
    checklist,
    ensure_catalogue,
    export_markdown,
    get_mistake,
    import_markdown,
    list_mistakes,
    normalise_id,
    open_log,
)
from ._markdown import ChecklistEntry, Entry, ParsedFile, Problem, parse_markdown, render_markdown
from ._models import ChecklistItem, Incident, Mistake
from ._search import SearchHit, fts_query, search

__all__ = [
    "CONDUCT_IDS",
    "ENFORCEMENTS",
    "MODEL_CHECKS",
    "NONFINITE_ID",
    "RULE_LINKS",
    "SEVERITIES",
    "ChecklistEntry",
    "ChecklistItem",
    "ChecklistView",
    "Entry",
    "ImportRejectedError",
    "ImportReport",
    "Incident",
    "InvalidInputError",
    "Mistake",
    "MistakesError",
    "NotFoundError",
    "ParsedFile",
    "Problem",
    "SearchHit",
    "add_mistake",
    "checklist",
    "ensure_catalogue",
    "export_markdown",
    "fts_query",
    "get_incident",
    "get_mistake",
    "import_markdown",
    "list_incidents",
    "list_mistakes",
    "normalise_id",
    "open_log",
    "parse_markdown",
    "record_incident",
    "render_markdown",
    "resolve_incident",
    "search",
]
