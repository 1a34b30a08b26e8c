"""memory: the SQLite store that every other package keeps its state in.

Public API: :func:`open_store` returns a :class:`Store` whose ``write()`` and ``read()``
context managers yield SQLModel sessions; :func:`state_dir` resolves the state folder.
"""

from ._errors import FTS5UnavailableError, SchemaTooNewError, StoreError
from ._heartbeats import Heartbeat, last_heartbeat, record_heartbeat
from ._paths import DB_NAME, state_dir
from ._runs import (
    ACTIVE,
    TERMINAL,
    Run,
    RunNotFoundError,
    RunProcess,
    active_runs,
    find_run,
    list_runs,
    processes_of_finished_runs,
    register_process,
)
from ._store import SCHEMA_VERSION, Store, open_store

__all__ = [
    "ACTIVE",
    "DB_NAME",
    "SCHEMA_VERSION",
    "TERMINAL",
    "FTS5UnavailableError",
    "Heartbeat",
    "Run",
    "RunNotFoundError",
    "RunProcess",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "active_runs",
    "find_run",
    "last_heartbeat",
    "list_runs",
    "open_store",
    "processes_of_finished_runs",
    "record_heartbeat",
    "register_process",
    "state_dir",
]
