"""A job that reports a step, writes to stderr, then dies of SIGKILL (as under the OOM killer)."""

from __future__ import annotations

import os
import signal
import sys

from harness.job import Reporter

rep = Reporter()
rep.start(total_steps=10, device="cpu")
rep.step(1, loss=2.0)
print("allocating 48 GB for the embedding table", file=sys.stderr, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
