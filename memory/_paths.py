"""Where Harness keeps its state (DESIGN section 10)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["DB_NAME", "state_dir"]

DB_NAME = "harness.db"


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$HARNESS_HOME``, else ``$XDG_DATA_HOME/harness``, else ``~/.local/share/harness``."""
    if home := environ.get("HARNESS_HOME"):
        return Path(home).expanduser()
    if xdg := environ.get("XDG_DATA_HOME"):
        return Path(xdg).expanduser() / "harness"
    base = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return base / ".local" / "share" / "harness"
