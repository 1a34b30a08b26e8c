"""Reading a metrics file through the diagnosis: ``harness diagnose`` and ``/diagnose``.

The file is read line by line (millions of lines are fine), parsed 1,024 lines per
``json.loads`` call (object keys are shared within a call: twice as fast as one call per
line; a batch with a bad line is parsed again line by line), and fed to the same
detectors the supervisor runs live. Lines that are not JSON objects are skipped, counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.detectors import Detectors
from harness.core.diagnose import Diagnosis, diagnose
from harness.errors import InputError, NotFoundError

__all__ = ["diagnose_file"]

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


def diagnose_file(path: Path, *, gated: list[str] | None = None) -> tuple[Diagnosis, int]:
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
