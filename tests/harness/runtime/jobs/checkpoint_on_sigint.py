"""A job that checkpoints on SIGINT and exits 0, as a training script should.

Usage: checkpoint_on_sigint.py READYFILE CHECKPOINT. READYFILE is created once the handler
is installed; on SIGINT the job writes CHECKPOINT and exits 0.
"""

import pathlib
import signal
import sys
import time

ready, checkpoint = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def on_sigint(signum: int, frame: object) -> None:
    checkpoint.write_text("step 42\n")
    sys.exit(0)


signal.signal(signal.SIGINT, on_sigint)
ready.write_text("ready\n")
while True:
    time.sleep(60)
