"""A job that checkpoints and resumes, as a training script should.

Usage: resumable.py STEPS CKPT_DIR [--resume PATH]. A step every 0.1 s; every 5 steps a
checkpoint file holding the step and a ``checkpoint`` event naming it. With ``--resume``
it starts after the step in that file. The end line says where it resumed from.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.job import Reporter

ap = argparse.ArgumentParser()
ap.add_argument("steps", type=int)
ap.add_argument("ckpt_dir", type=Path)
ap.add_argument("--resume", type=Path)
args = ap.parse_args()
args.ckpt_dir.mkdir(parents=True, exist_ok=True)
start = int(args.resume.read_text()) if args.resume else 0
rep = Reporter()
rep.start(total_steps=args.steps, device="cpu")
for step in range(start + 1, args.steps + 1):
    time.sleep(0.1)
    rep.step(step, loss=1.0 / step)
    if step % 5 == 0:
        path = args.ckpt_dir / f"step-{step:05d}.txt"
        path.write_text(str(step))
        rep.checkpoint(path, step)
rep.end(score=1.0, resumed_from=start)
