"""A job that names no device at start and mostly sleeps: what a GPU job looks like to the
CPU probe (the GPU figures come from the test's fake NVML). Usage: gpu_like.py SECONDS."""

from __future__ import annotations

import sys
import time

from harness.job import Reporter

rep = Reporter()
rep.emit(event="start", total_steps=1000)  # no device: the supervisor must resolve it
stop_at = time.time() + float(sys.argv[1])
step = 0
while time.time() < stop_at:
    time.sleep(0.1)
    step += 1
    rep.step(step, loss=1.0 / (1 + step))
rep.end(steps=step)
