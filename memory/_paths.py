"""The database's file name inside the state dir (DESIGN section 10).

Where the state dir is, is the settings tree's business (``harness.daemon.config``):
memory never reads the environment.
"""

from __future__ import annotations

__all__ = ["DB_NAME"]

DB_NAME = "harness.db"
