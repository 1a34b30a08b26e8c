"""memory: the SQLite store that every other package keeps its state in.

Public API: :func:`open_store` returns a :class:`Store` whose ``write()`` and ``read()``
context managers yield SQLModel sessions; :func:`state_dir` resolves the state folder.
"""

from ._errors import FTS5UnavailableError, SchemaTooNewError, StoreError
from ._paths import DB_NAME, state_dir
from ._store import SCHEMA_VERSION, Store, open_store

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "FTS5UnavailableError",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "open_store",
    "state_dir",
]
