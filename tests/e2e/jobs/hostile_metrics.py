"""A job whose metrics hold what SQLite refuses, then a loss of 1e999 (inf), then hangs.

Written as raw bytes, as any script might: a metric of 1e999, lone surrogates (escaped, in
a value and in a key), then at step 3 ``"loss": 1e999``, which parses as infinity.
"""

from __future__ import annotations

import os
import time

fd = os.open(os.environ["HARNESS_METRICS"], os.O_WRONLY | os.O_APPEND)
for step, extra in (
    (1, b'"big": 1e999, "note": "half \\ud800 a pair"'),
    (2, b'"\\udfffkey": 2.5, "deep": [[["\\ud83d"]]]'),
    (3, b'"grad_norm": 1.0, "loss": 1e999'),
):
    line = b'{"t": %r, "step": %d, "loss": 0.5, ' % (time.time(), step) + extra + b"}\n"
    if step == 3:
        line = b'{"t": %r, "step": 3, ' % time.time() + extra + b"}\n"
    os.write(fd, line)
    time.sleep(0.3)
time.sleep(120)
