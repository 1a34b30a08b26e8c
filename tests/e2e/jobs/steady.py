"""A job that reports a step every --every seconds and mostly sleeps.

Options (all optional):
  --seconds S         end after S seconds (default: run until --release appears)
  --release PATH      end as soon as PATH exists
  --every S           seconds between step lines (default 0.2)
  --end KEY=VALUE     a final metric for the `end` line (repeatable)
  --ready PATH        written once the SIGINT handler is installed and a line is out
  --checkpoint PATH   on SIGINT write "step N" to PATH and exit 0, as a training script should
  --touch PATH        created at start (proves the job ran at all)
  --garbage           also write unreadable lines, a line split over two writes and a
                      1.5 MB line, in two bursts
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from harness.job import Reporter


def raw(text: bytes) -> None:
    fd = os.open(os.environ["HARNESS_METRICS"], os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--release")
    ap.add_argument("--every", type=float, default=0.2)
    ap.add_argument("--end", action="append", default=[])
    ap.add_argument("--ready")
    ap.add_argument("--checkpoint")
    ap.add_argument("--touch")
    ap.add_argument("--garbage", action="store_true")
    args = ap.parse_args()
    if args.touch:
        Path(args.touch).write_text("ran\n")
    rep = Reporter()
    print(f"steady: started as {os.getpid()}", flush=True)
    step = 0

    def on_sigint(signum: int, frame: object) -> None:
        Path(args.checkpoint).write_text(f"step {step}\n")
        rep.checkpoint(args.checkpoint, step)
        sys.exit(0)

    if args.checkpoint:
        signal.signal(signal.SIGINT, on_sigint)
    rep.start(total_steps=1000, device="cpu")
    if args.garbage:
        raw(b"not json at all\n[1, 2, 3]\n\xff\xfe\xfd\n")
        raw(b'{"event": "phase", "pha')  # half a line; the supervisor polls meanwhile
        time.sleep(0.5)
        raw(b'se": "train"}\n')
    if args.ready:
        Path(args.ready).write_text("ready\n")
    stop_at = time.time() + args.seconds if args.seconds is not None else None
    while True:
        if stop_at is not None and time.time() >= stop_at:
            break
        if args.release and Path(args.release).exists():
            break
        time.sleep(args.every)
        if args.garbage and step == 2:
            pad = json.dumps({"step": step, "pad": "x" * 1_500_000})
            raw(pad.encode() + b"\n" + b"{{{ more garbage\n")
        step += 1
        rep.step(step, loss=1.0 / (1 + step))
    final = {}
    for item in args.end:
        key, _, value = item.partition("=")
        final[key] = float(value)
    rep.end(steps=step, **final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
