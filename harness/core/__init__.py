"""Pure logic: no I/O, no clock reads. Specs, rules, the run state machine, formatting.

Everything here takes what was observed (and the time) as arguments and returns values,
so it is tested without processes, files or clocks.
"""

from harness.core.format import progress_line
from harness.core.heartbeat import HeartbeatView, build_heartbeat
from harness.core.machine import (
    AbortRequested,
    Action,
    Event,
    Exited,
    Finish,
    MetricLines,
    Notify,
    ProbeSample,
    RecordIncident,
    RunMachine,
    Terminate,
    Tick,
)
from harness.core.rules import Finding, GateResult, UtilSample
from harness.core.spec import Gate, RunSpec, WatchConfig, apply_overrides, spec_from_mapping
from harness.core.values import as_float

__all__ = [
    "AbortRequested",
    "Action",
    "Event",
    "Exited",
    "Finding",
    "Finish",
    "Gate",
    "GateResult",
    "HeartbeatView",
    "MetricLines",
    "Notify",
    "ProbeSample",
    "RecordIncident",
    "RunMachine",
    "RunSpec",
    "Terminate",
    "Tick",
    "UtilSample",
    "WatchConfig",
    "apply_overrides",
    "as_float",
    "build_heartbeat",
    "progress_line",
    "spec_from_mapping",
]
