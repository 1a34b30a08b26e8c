"""``python -m harness.runtime.chart``: a chart description on stdin, its PNG on stdout.

Exit 0 with the PNG; 2 with one line on stderr when the input is not a description; 1
when drawing failed. Run by the daemon (see ``_driver``) so matplotlib and numpy are
loaded here, never in the daemon.
"""

from __future__ import annotations

import json
import sys

from harness.runtime.chart._render import render_png
from harness.runtime.chart._series import load_series

MAX_INPUT_BYTES = 1 << 20


def main() -> int:
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        print(f"chart: the description is over {MAX_INPUT_BYTES} bytes", file=sys.stderr)
        return 2
    try:
        desc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        print(f"chart: the description is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(desc, dict):
        print("chart: the description must be a JSON object", file=sys.stderr)
        return 2
    try:
        png = render_png(load_series(desc))
    except Exception as exc:  # one line for the daemon's log, not a traceback
        print(f"chart: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(png)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
