"""The job side: what a training script imports to talk to the supervisor.

``Reporter`` (stdlib only) writes the metrics stream and reads live controls;
``harness.job.protocol`` holds the names both sides agree on. The model checks
(``harness.job.checks``, torch) and the framework callbacks (``harness.job.lightning``,
``harness.job.hf``) are imported on first use, so ``import harness.job`` loads neither
torch nor a framework. Nothing here imports the supervisor side.
"""

from typing import TYPE_CHECKING

from harness._lazy import exports
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
    "CheckConfig",
    "CheckResult",
    "Reporter",
    "run_checks",
]

if TYPE_CHECKING:
    from harness.job.checks import CheckConfig, CheckResult, run_checks

__getattr__, __dir__ = exports(
    __name__,
    {
        "CheckConfig": "harness.job.checks",
        "CheckResult": "harness.job.checks",
        "run_checks": "harness.job.checks",
    },
)
