"""What the framework jobs share: the test's knobs, read from the environment.

``FW_STEPS`` (steps to train), ``FW_NAN_AT`` (the loss becomes NaN from this step),
``FW_WAIT_LR_AT`` (at this step, wait until controls.json holds ``lr`` before going on, so
the test's control lands mid-run whatever the machine's load), ``FW_CUT`` (a trainable
layer cut out of the graph by a ``.detach()``), ``FW_VOCAB_OVER`` (token ids beyond the
embedding).
"""

from __future__ import annotations

import json
import os
import time


def knob(name: str, default: int = 0) -> int:
    return int(os.environ.get(name, default))


def wait_for_lr(timeout_s: float = 60.0) -> None:
    """Block until the supervisor's controls.json has an ``lr``."""
    path = os.environ["HARNESS_CONTROLS"]
    print("waiting for an lr control", flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as f:
                if "lr" in json.load(f):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit("no lr control arrived")
