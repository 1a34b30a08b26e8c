"""What every command handler shares: settings, the store, output, error mapping."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from harness._config import ConfigError, Settings, load_settings
from harness.cli import EXIT_FAILURE, EXIT_USAGE, UsageError

__all__ = ["emit_json", "fmt_time", "parse_since", "run_handler", "settings_for"]


def settings_for(args: argparse.Namespace) -> Settings:
    return load_settings(os.environ, config=getattr(args, "config", None))


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")


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


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; map our errors to one line on stderr and an exit code."""
    from harness._procs import ProcError
    from harness._spec import SpecError
    from memory import StoreError
    from mistakes import ImportRejectedError, MistakesError, NotFoundError

    try:
        return handler(args)
    except ImportRejectedError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotFoundError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (UsageError, MistakesError, ConfigError, SpecError, ProcError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # `harness ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
