"""A process that only sleeps. Usage: sleeper.py SECONDS."""

from __future__ import annotations

import sys
import time

time.sleep(float(sys.argv[1]))
