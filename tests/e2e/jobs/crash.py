"""A job that reports a step, complains on stderr and exits with status 3."""

from __future__ import annotations

import sys

from harness.job import Reporter

rep = Reporter()
rep.start(total_steps=10, device="cpu")
rep.step(1, loss=2.0)
print("loading shard 7 of 9", file=sys.stderr)
print("RuntimeError: shape mismatch in layer 4 (64 vs 32)", file=sys.stderr)
sys.exit(3)
