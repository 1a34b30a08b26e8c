"""A job that does nothing but sleep. Usage: sleeper.py SECONDS."""

import sys
import time

time.sleep(float(sys.argv[1]))
