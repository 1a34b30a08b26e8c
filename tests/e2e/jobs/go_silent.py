"""A job that reports three steps, then stops writing metrics (a hang) and sleeps."""

from __future__ import annotations

import time

from harness.job import Reporter

rep = Reporter()
rep.start(total_steps=100, device="cpu")
for step in range(1, 4):
    rep.step(step, loss=1.0 / step)
    time.sleep(0.1)
time.sleep(120)
