"""memory: the SQLite store that every other package keeps its state in.

Public API: :func:`open_store` returns a :class:`Store` whose ``write()`` and ``read()``
context managers yield SQLModel sessions. Runs, heartbeats, notes (standing orders, the
inbox) are tables with functions that take a session keyword. Text and JSON helpers
(:func:`check_text`, :func:`clean_text`, :func:`dumps_strict`, ...) are here because every
package stores and prints text and JSON that came from outside.
"""

from ._errors import FTS5UnavailableError, SchemaTooNewError, StoreError
from ._heartbeats import Heartbeat, last_heartbeat, record_heartbeat
from ._json import dumps_strict, json_safe, storable
from ._notes import (
    MAX_NOTE_CHARS,
    NOTE_KINDS,
    Marker,
    Note,
    NoteNotFoundError,
    add_note,
    get_marker,
    list_notes,
    mark_read,
    remove_note,
    set_marker,
    unread_inbox,
)
from ._paths import DB_NAME
from ._runs import (
    ACTIVE,
    TERMINAL,
    Run,
    RunNotFoundError,
    RunProcess,
    active_runs,
    find_run,
    list_runs,
    pending_abort,
    processes_of_finished_runs,
    register_process,
    request_abort,
)
from ._store import SCHEMA_VERSION, Store, open_store
from ._text import InvalidTextError, check_text, clean_text, clip, one_line

__all__ = [
    "ACTIVE",
    "DB_NAME",
    "MAX_NOTE_CHARS",
    "NOTE_KINDS",
    "SCHEMA_VERSION",
    "TERMINAL",
    "FTS5UnavailableError",
    "Heartbeat",
    "InvalidTextError",
    "Marker",
    "Note",
    "NoteNotFoundError",
    "Run",
    "RunNotFoundError",
    "RunProcess",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "active_runs",
    "add_note",
    "check_text",
    "clean_text",
    "clip",
    "dumps_strict",
    "find_run",
    "get_marker",
    "json_safe",
    "last_heartbeat",
    "list_notes",
    "list_runs",
    "mark_read",
    "one_line",
    "open_store",
    "pending_abort",
    "processes_of_finished_runs",
    "record_heartbeat",
    "register_process",
    "remove_note",
    "request_abort",
    "set_marker",
    "storable",
    "unread_inbox",
]
