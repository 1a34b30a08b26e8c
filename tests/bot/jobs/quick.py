"""A small job for the bot tests: reports steps, applies lr from controls.json."""

import argparse
import time

from harness.job import Reporter

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--lr", type=float, default=0.001)
args = ap.parse_args()
rep = Reporter()
rep.start(total_steps=args.steps, device="cpu")
lr = args.lr
for step in range(args.steps):
    controls = rep.controls()
    if controls and "lr" in controls and controls["lr"] != lr:
        lr = controls["lr"]
        rep.applied({"lr": lr})
    rep.step(step, loss=1.0 / (step + 1), lr=lr)
    time.sleep(0.1)
rep.end(acc=1.0)
