"""A job that ignores SIGINT and SIGTERM, so only SIGKILL stops it.

Usage: ignore_signals.py READYFILE. READYFILE is created once the signals are ignored.
"""

import pathlib
import signal
import sys
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text("ready\n")
while True:
    time.sleep(60)
