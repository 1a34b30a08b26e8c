"""A job whose grandchild escapes the run marker and the job's session (mistake M-025).

Usage: escape.py PIDFILE RELEASE [single|double|orphan]. The job forks; the child calls
os.setsid() and execs Python with an empty environment (so no HARNESS_RUN_ID), which
ignores SIGINT and SIGTERM, appends "grandchild <pid>" to PIDFILE and sleeps forever. With
"double" (a daemon's double fork) the child forks once more after setsid() and exits at
once, so the grandchild is reparented to init before anyone can see it as a descendant;
"orphan" does the same without setsid(), so the grandchild stays in the job's session.
The job itself waits until the file RELEASE exists, then exits 0 and leaves the
grandchild behind.
"""

import os
import sys
import time

GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a") as f:
    f.write(f"grandchild {os.getpid()}\\n")
while True:
    time.sleep(60)
"""


def main() -> None:
    pidfile, release = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "single"
    double = mode in ("double", "orphan")
    child = os.fork()
    if child == 0:
        if mode != "orphan":
            os.setsid()
        if double and os.fork() != 0:
            os._exit(0)
        os.execve(sys.executable, [sys.executable, "-c", GRANDCHILD, pidfile], {})
    if double:
        os.waitpid(child, 0)
    while not os.path.exists(release):
        time.sleep(0.05)


if __name__ == "__main__":
    main()
