"""What every command handler shares: settings, the store, output, times."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mistakes as ml
from harness.daemon.config import Settings, load_settings
from harness.errors import HarnessError, NotFoundError, UsageError
from memory import Store, dumps_strict

__all__ = [
    "FLAG_SETTINGS",
    "emit_json",
    "fmt_time",
    "parse_since",
    "read_input",
    "settings_for",
    "store_for",
]

#: command-line flags that set a setting: argparse dest -> (dotted key, flag as typed)
FLAG_SETTINGS = {
    "heartbeat": ("heartbeat.interval_s", "--heartbeat"),
    "port": ("sidecar.port", "--port"),
}


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings tree for this command (file < environment < flags), built once."""
    cached = getattr(args, "_settings", None)
    if isinstance(cached, Settings):
        return cached
    flags = {
        key: (value, flag)
        for dest, (key, flag) in FLAG_SETTINGS.items()
        if (value := getattr(args, dest, None)) is not None
    }
    settings = load_settings(os.environ, config=getattr(args, "config", None), flags=flags)
    args._settings = settings
    return settings


def store_for(args: argparse.Namespace) -> Store:
    """The store with the mistake log's tables (incidents are everywhere)."""
    return ml.open_log(settings_for(args).paths.db_path)


def read_input(path: Path) -> bytes:
    """A file named on the command line: missing is not found (1), a directory bad input (2)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:  # a NUL byte: no file has such a name
        raise UsageError(f"{str(path)!r}: not a file name (it holds a NUL byte)") from None


def emit_json(data: Any) -> None:
    """``data`` on stdout as strict JSON: NaN/Infinity become null, text is cleaned.

    Rows written by an older Harness may still hold a NaN (a loss at the step it went
    non-finite); output must parse everywhere all the same.
    """
    sys.stdout.write(dumps_strict(data, indent=2) + "\n")


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``90s``/``30m``/``2h``/``3d``/``1w`` ago, an ISO date or datetime, or unix seconds."""
    now = time.time() if now is None else now
    t = text.strip()
    if m := _REL.match(t):
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise UsageError(
            f"--since: cannot read {text!r} (use e.g. 2h, 3d, 2026-11-01 or 2026-11-01T12:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time, as a person types it
    return dt.astimezone(UTC).timestamp()
