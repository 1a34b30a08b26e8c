"""A stdlib rank for torchrun tests: ``ranks.py MODE [ARG]`` (torchrun sets RANK etc.).

- ``flaky N``: rank 1 exits 3 on its first N attempts (TORCHELASTIC_RESTART_COUNT), with a
  line on stderr; every rank otherwise prints its attempt and exits 0.
- ``sigint``: counts SIGINTs for a second after the first one, prints ``SIGINT xN``, exits 0.
- ``escape``: starts a grandchild in a session of its own that ignores SIGINT and SIGTERM
  (its PID on stdout), then waits to be stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

rank = int(os.environ["RANK"])
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
mode = sys.argv[1]
print(f"rank {rank} attempt {attempt} pid {os.getpid()}", flush=True)

if mode == "flaky":
    if rank == 1 and attempt < int(sys.argv[2]):
        time.sleep(0.5)  # let rank 0 start, so torchrun has a group to stop
        print("flaky: rank 1 gives up", file=sys.stderr, flush=True)
        sys.exit(3)
    sys.exit(0)

if mode == "sigint":
    count = 0

    def on_int(signum: int, frame: object) -> None:
        global count
        count += 1

    signal.signal(signal.SIGINT, on_int)
    print("ready", flush=True)
    while not count:
        time.sleep(0.05)
    time.sleep(1.0)  # a second SIGINT (from anyone) would arrive meanwhile
    print(f"SIGINT x{count}", flush=True)
    sys.exit(0)

if mode == "escape":
    code = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(300)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    print(f"grandchild {child.pid}", flush=True)
    print("ready", flush=True)
    time.sleep(300)
