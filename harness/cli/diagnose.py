"""``harness diagnose RUN|METRICS_FILE [--json]``: what went wrong in training, and why.

The file is read line by line (a file of millions of lines is fine) and fed to the same
detectors the supervisor runs live (``harness.core.detectors``); the diagnosis names the
symptoms, their ranked causes with confidences, evidence and fixes, and quick wins. Any
file that follows the job protocol works, not only the harness's own runs. Lines that
are not JSON objects are skipped and counted. Exit status 0 whatever the verdict (it is
in the output); 1 when the run or file is not found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import emit_json, store_for
from harness.core.detectors import Detectors
from harness.core.diagnose import diagnose, gated_up
from harness.errors import InputError, NotFoundError
from harness.job.protocol import METRICS_FILE
from memory import find_run

__all__ = ["cmd_diagnose", "diagnose_file"]

_MAX_LINE = 1 << 20
_BATCH = 1024  # lines parsed in one json.loads call: object keys are shared, twice as fast


def _feed_batch(batch: list[bytes], loads: Any, feed: Any) -> int:
    """Parse and feed a batch of lines; how many were not JSON objects."""
    if not batch:
        return 0
    try:
        records = loads(b"[" + b",".join(batch) + b"]")
        if len(records) != len(batch):  # a line held two values ("{..},{..}"): not a line
            raise ValueError("a line that is not one JSON value")
    except ValueError:  # a bad line in the batch: one by one, skipping the bad ones
        records = []
        for line in batch:
            try:
                records.append(loads(line))
            except ValueError:
                records.append(None)
    skipped = 0
    for rec in records:
        if isinstance(rec, dict):
            feed(rec)
        else:
            skipped += 1
    return skipped


def diagnose_file(path: Path, *, gated: list[str] | None = None) -> tuple[Any, int]:
    """The diagnosis of one metrics file, and how many of its lines were skipped."""
    detectors = Detectors(gated_up=gated or ())
    skipped = 0
    loads = json.loads
    feed = detectors.feed
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a metrics file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        batch: list[bytes] = []
        for line in f:
            if len(line) > _MAX_LINE:
                skipped += 1
            elif line.strip():
                batch.append(line)
                if len(batch) == _BATCH:
                    skipped += _feed_batch(batch, loads, feed)
                    batch = []
        skipped += _feed_batch(batch, loads, feed)
    detectors.close()
    return diagnose(detectors), skipped


def _target(args: argparse.Namespace) -> tuple[Path, list[str], str]:
    """The metrics file to read, the gated-up metrics, and what to call it."""
    ref = args.target
    path = Path(ref)
    if path.is_file() or path.suffix == ".jsonl" or "/" in ref:
        return path, [], str(path)
    with store_for(args) as store, store.read() as s:
        run = find_run(session=s, ref=ref)
    gates = (run.spec or {}).get("gates") or {}
    return Path(run.run_dir) / METRICS_FILE, gated_up(gates), run.id


def cmd_diagnose(args: argparse.Namespace) -> int:
    path, gated, name = _target(args)
    result, skipped = diagnose_file(path, gated=gated)
    if args.json:
        emit_json({**result.to_json(), "lines": result.lines, "skipped": skipped})
        return 0
    sys.stdout.write(result.render_text(name=name))
    if skipped:
        print(f"({skipped} line(s) were not JSON objects and were skipped)")
    return 0
