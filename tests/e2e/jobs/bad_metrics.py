"""A job that puts something other than a regular file where its metrics go, then waits.

``bad_metrics.py fifo | symlink TARGET``: metrics.jsonl is replaced by a FIFO (that nobody
ever writes) or by a symlink to TARGET; then the job sleeps until it is stopped, so only
the stall rule or an abort can end it.
"""

from __future__ import annotations

import os
import sys
import time

path = os.environ["HARNESS_METRICS"]
os.unlink(path)
if sys.argv[1] == "fifo":
    os.mkfifo(path)
else:
    os.symlink(sys.argv[2], path)
print("bad_metrics: in place", flush=True)
time.sleep(120)
