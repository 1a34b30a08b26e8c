"""The job side: what a training script imports to talk to the supervisor.

``Reporter`` (stdlib only) writes the metrics stream and reads live controls;
``harness.job.protocol`` holds the names both sides agree on. Framework callbacks and
model checks will live here too, importing torch lazily. Nothing here imports the
supervisor side.
"""

from harness.job.protocol import (
    CONTROLS_FILE,
    ENV_CONTROLS,
    ENV_METRICS,
    ENV_RUN_DIR,
    ENV_RUN_ID,
    METRICS_FILE,
)
from harness.job.report import Reporter

__all__ = [
    "CONTROLS_FILE",
    "ENV_CONTROLS",
    "ENV_METRICS",
    "ENV_RUN_DIR",
    "ENV_RUN_ID",
    "METRICS_FILE",
    "Reporter",
]
