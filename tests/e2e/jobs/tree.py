"""A job with a child and a grandchild in its own session, like torchrun and its workers.

Usage: tree.py PIDFILE [ROLE]. Each process appends "<role> <pid>" to PIDFILE. The root
reports a step every 0.2 s; the grandchild calls os.setsid() and ignores SIGINT and SIGTERM,
so only SIGKILL stops it, and once its parents are gone only the run marker leads to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from harness.job import Reporter


def main() -> None:
    pidfile = sys.argv[1]
    role = sys.argv[2] if len(sys.argv) > 2 else "root"
    if role == "grandchild":
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        nxt = "child" if role == "root" else "grandchild"
        subprocess.Popen([sys.executable, __file__, pidfile, nxt])
    with open(pidfile, "a") as f:
        f.write(f"{role} {os.getpid()}\n")
    rep = Reporter() if role == "root" else None
    step = 0
    while True:
        time.sleep(0.2)
        step += 1
        if rep is not None:
            rep.step(step, loss=1.0 / step)


if __name__ == "__main__":
    main()
