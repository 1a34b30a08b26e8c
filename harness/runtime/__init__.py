"""The OS shell: the supervisor, launchers, processes, probes, the tailer, preflight.

Lazy: the job wrapper runs as ``python -m harness.runtime.wrap`` in every job and must
not load the supervisor; names below are imported on first use.
"""

from typing import TYPE_CHECKING

from harness._lazy import exports

__all__ = [
    "PROGRESS_EVERY_S",
    "TAIL_EVERY_S",
    "CpuProbe",
    "GpuProbe",
    "MetricsTail",
    "Supervisor",
    "TailBatch",
    "launcher_for",
    "list_presets",
    "load_preset",
    "load_spec",
    "preflight_checks",
    "process_tree",
    "read_ram",
    "resolve_command",
    "update_controls",
]

if TYPE_CHECKING:
    from harness.runtime.controls import update_controls
    from harness.runtime.launchers import launcher_for
    from harness.runtime.preflight import preflight_checks
    from harness.runtime.probes import CpuProbe, GpuProbe, process_tree, read_ram
    from harness.runtime.specs import list_presets, load_preset, load_spec, resolve_command
    from harness.runtime.supervisor import PROGRESS_EVERY_S, TAIL_EVERY_S, Supervisor
    from harness.runtime.tail import MetricsTail, TailBatch

__getattr__, __dir__ = exports(
    __name__,
    {
        "PROGRESS_EVERY_S": "harness.runtime.supervisor",
        "TAIL_EVERY_S": "harness.runtime.supervisor",
        "CpuProbe": "harness.runtime.probes",
        "GpuProbe": "harness.runtime.probes",
        "MetricsTail": "harness.runtime.tail",
        "Supervisor": "harness.runtime.supervisor",
        "TailBatch": "harness.runtime.tail",
        "launcher_for": "harness.runtime.launchers",
        "list_presets": "harness.runtime.specs",
        "load_preset": "harness.runtime.specs",
        "load_spec": "harness.runtime.specs",
        "preflight_checks": "harness.runtime.preflight",
        "process_tree": "harness.runtime.probes",
        "read_ram": "harness.runtime.probes",
        "resolve_command": "harness.runtime.specs",
        "update_controls": "harness.runtime.controls",
    },
)
