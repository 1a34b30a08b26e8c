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
import sys
from pathlib import Path

from harness.cli.common import emit_json, store_for
from harness.core.diagnose import gated_up
from harness.job.protocol import METRICS_FILE
from harness.runtime.diagnose import diagnose_file
from memory import find_run

__all__ = ["cmd_diagnose", "diagnose_file"]


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
