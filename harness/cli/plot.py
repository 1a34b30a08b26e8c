"""``harness plot RUN [-o FILE]``: a run's chart as PNG, the one Discord gets.

Loss and the key metric over steps, utilisation per device over time, incidents marked
(docs/charts.md). RUN is a run id, a unique prefix of one, or ``last``. The file is
``<run id>.png`` in the current directory unless ``-o`` names one (``-o -``: stdout).
Drawn in this process (matplotlib); the daemon draws the same chart in a child. Exit 1
with one line for an unknown run or a file that cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mistakes as ml
from harness.cli.common import store_for
from harness.cli.exits import EXIT_OK
from harness.errors import HarnessError
from harness.runtime.chart import chart_png, describe_run
from memory import find_run

__all__ = ["cmd_plot"]


def _write(path: Path, data: bytes) -> None:
    """Write the file whole (a temporary beside it, then renamed); one line on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_plot(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        run = find_run(session=s, ref=args.run)
        found = ml.list_incidents(session=s, run_id=run.id, limit=50)
    png = chart_png(describe_run(run, [(i.ts, i.rule, i.severity) for i in found]))
    if args.output == "-":
        sys.stdout.buffer.write(png)
        sys.stdout.buffer.flush()
        return EXIT_OK
    out = Path(args.output) if args.output else Path(f"{run.id}.png")
    if out.is_dir():
        raise HarnessError(f"cannot write {out}: is a directory (name a file with -o)")
    _write(out, png)
    print(f"wrote {out} ({len(png) // 1024} KB): {run.name} [{run.id}]")
    return EXIT_OK
