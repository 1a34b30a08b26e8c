"""Pure logic: no I/O, no clock reads. Specs, rules, the run state machine, formatting.

Everything here takes what was observed (and the time) as arguments and returns values,
so it is tested without processes, files or clocks.

Lazy: the node agent of a Slurm job imports ``harness.core.devices`` on every node and
must not pay for the rest (formatting pulls in the store); names below are imported on
first use.
"""

from typing import TYPE_CHECKING

from harness._lazy import exports

__all__ = [
    "AbortRequested",
    "Action",
    "Detectors",
    "Diagnosis",
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
    "diagnose",
    "progress_line",
    "spec_from_mapping",
]

if TYPE_CHECKING:
    from harness.core.detectors import Detectors
    from harness.core.diagnose import Diagnosis, diagnose
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

__getattr__, __dir__ = exports(
    __name__,
    {
        "AbortRequested": "harness.core.machine",
        "Detectors": "harness.core.detectors",
        "Diagnosis": "harness.core.diagnose",
        "Action": "harness.core.machine",
        "Event": "harness.core.machine",
        "Exited": "harness.core.machine",
        "Finding": "harness.core.rules",
        "Finish": "harness.core.machine",
        "Gate": "harness.core.spec",
        "GateResult": "harness.core.rules",
        "HeartbeatView": "harness.core.heartbeat",
        "MetricLines": "harness.core.machine",
        "Notify": "harness.core.machine",
        "ProbeSample": "harness.core.machine",
        "RecordIncident": "harness.core.machine",
        "RunMachine": "harness.core.machine",
        "RunSpec": "harness.core.spec",
        "Terminate": "harness.core.machine",
        "Tick": "harness.core.machine",
        "UtilSample": "harness.core.rules",
        "WatchConfig": "harness.core.spec",
        "apply_overrides": "harness.core.spec",
        "as_float": "harness.core.values",
        "build_heartbeat": "harness.core.heartbeat",
        "diagnose": "harness.core.diagnose",
        "progress_line": "harness.core.format",
        "spec_from_mapping": "harness.core.spec",
    },
)
