"""A job with a child and a grandchild in its own session, like torchrun and its workers.

Usage: spawn_tree.py PIDFILE. Each process appends "<role> <pid>" to PIDFILE, then sleeps.
The grandchild calls os.setsid() and ignores SIGINT, so it survives the first step of an
escalation and is only reachable through the run marker once its parents are gone.
"""

import os
import signal
import subprocess
import sys
import time


def record(pidfile: str, role: str) -> None:
    with open(pidfile, "a") as f:
        f.write(f"{role} {os.getpid()}\n")


def main() -> None:
    role = sys.argv[2] if len(sys.argv) > 2 else "root"
    pidfile = sys.argv[1]
    if role == "grandchild":
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif role in ("root", "child"):
        nxt = "child" if role == "root" else "grandchild"
        subprocess.Popen([sys.executable, __file__, pidfile, nxt])
    record(pidfile, role)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
