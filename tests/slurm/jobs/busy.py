"""A healthy CPU job: one busy process reporting steps, then an end line with its score.

Usage: busy.py SECONDS [SCORE]. On SIGINT it checkpoints (a checkpoint event) and exits 0.
"""

from __future__ import annotations

import signal
import sys
import time

from harness.job import Reporter

seconds = float(sys.argv[1])
score = float(sys.argv[2]) if len(sys.argv) > 2 else 0.97
rep = Reporter()
rep.start(total_steps=int(seconds * 5), device="cpu")
step = 0


def on_sigint(signum: int, frame: object) -> None:
    rep.checkpoint("/dev/null", step)
    sys.exit(0)


signal.signal(signal.SIGINT, on_sigint)
t0 = last = time.time()
while time.time() - t0 < seconds:
    sum(i * i for i in range(20_000))  # busy: one CPU at 100 %
    if time.time() - last >= 0.2:
        step += 1
        rep.step(step, loss=1.0 / step)
        last = time.time()
rep.end(score=score)
