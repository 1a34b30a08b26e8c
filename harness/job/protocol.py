"""The job protocol's names (DESIGN section 3): what both sides of it agree on.

The supervisor side may import this module and nothing else of ``harness.job``.
"""

from __future__ import annotations

__all__ = [
    "ALERT_LEVELS",
    "CONTROLS_FILE",
    "ENV_CONTROLS",
    "ENV_METRICS",
    "ENV_RUN_DIR",
    "ENV_RUN_ID",
    "EVENTS",
    "EXIT_FILE",
    "METRICS_FILE",
    "PHASES",
    "STDERR_FILE",
    "STDOUT_FILE",
]

#: the run id; also the marker by which the supervisor recognises the job's processes
ENV_RUN_ID = "HARNESS_RUN_ID"
ENV_RUN_DIR = "HARNESS_RUN_DIR"
ENV_METRICS = "HARNESS_METRICS"
ENV_CONTROLS = "HARNESS_CONTROLS"

METRICS_FILE = "metrics.jsonl"
CONTROLS_FILE = "controls.json"
EXIT_FILE = "exit.json"  # written by the job wrapper: the command's exit status
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"

#: reserved values of a metrics line's ``event``
EVENTS = ("start", "phase", "checkpoint", "controls", "alert", "end")
#: values of a ``phase`` event; outside ``train`` an idle device is not waste
PHASES = ("train", "eval", "checkpoint", "data")
#: levels of an ``alert`` event (a job's own alert, sent to Discord at once as an incident)
ALERT_LEVELS = ("info", "warn", "error")
