"""A stdlib-only job that keeps every core busy for a while and reports metrics.

``python -m harness.examples.burn --seconds 20`` — one worker process per core spins on
arithmetic; the parent reports steps, a falling ``loss`` and a rising ``score``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time

from harness.job import Reporter


def _spin(stop_at: float) -> None:
    x = 0.0
    while time.time() < stop_at:
        for i in range(20_000):
            x += math.sqrt(i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    rep = Reporter()
    steps = max(int(args.seconds * 4), 1)
    rep.start(total_steps=steps, device="cpu")
    stop_at = time.time() + args.seconds
    workers = [mp.Process(target=_spin, args=(stop_at,)) for _ in range(max(args.workers - 1, 0))]
    for w in workers:
        w.start()
    step = 0
    x = 0.0
    while time.time() < stop_at:
        t_end = min(time.time() + 0.25, stop_at)
        while time.time() < t_end:
            for i in range(20_000):
                x += math.sqrt(i)
        step += 1
        rep.step(step, loss=1.0 / (1 + step), score=min(1.0, step / steps))
    for w in workers:
        w.join()
    rep.end(score=1.0, loss=1.0 / (1 + step), steps=step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
