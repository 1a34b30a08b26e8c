"""Errors raised by the store.

StoreError                 anything the store cannot do, with a one-line message
 ├── SchemaTooNewError     the file was written by a newer Harness
 └── FTS5UnavailableError  this SQLite was built without FTS5
"""

from __future__ import annotations

__all__ = ["FTS5UnavailableError", "SchemaTooNewError", "StoreError"]


class StoreError(Exception):
    """The store cannot be opened or used; the message names the file and the cause."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer version; we refuse rather than corrupt it."""


class FTS5UnavailableError(StoreError):
    """SQLite lacks the FTS5 extension that full-text search needs."""
