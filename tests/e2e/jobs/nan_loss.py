"""A job whose loss turns NaN at step 5, then hangs quietly until it is stopped."""

from __future__ import annotations

import math
import time

from harness.job import Reporter

rep = Reporter()
rep.start(total_steps=100, device="cpu")
for step in range(1, 5):
    rep.step(step, loss=1.0 / step)
    time.sleep(0.1)
rep.step(5, loss=math.nan)  # the line carries its own write time in `t`
time.sleep(120)
