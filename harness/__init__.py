"""Harness: launch, watch and abort training runs by a checklist of past mistakes.

The public face::

    from harness import Reporter            # in a training script (stdlib only)
    from harness import RunSpec, load_spec  # specs and presets
    from harness import Supervisor          # launch and watch runs from your own code

Names are imported on first use, so a training script that imports ``harness.job``
does not load the supervisor. The sub-packages by role (``job``, ``core``, ``runtime``,
``daemon``, ``cli``) are described in docs/ARCHITECTURE.md.
"""

from typing import TYPE_CHECKING

from harness._lazy import exports
from harness._version import __version__

__all__ = ["Reporter", "RunSpec", "Supervisor", "__version__", "load_spec"]

if TYPE_CHECKING:
    from harness.core.spec import RunSpec
    from harness.job.report import Reporter
    from harness.runtime.specs import load_spec
    from harness.runtime.supervisor import Supervisor

__getattr__, __dir__ = exports(
    __name__,
    {
        "Reporter": "harness.job.report",
        "RunSpec": "harness.core.spec",
        "load_spec": "harness.runtime.specs",
        "Supervisor": "harness.runtime.supervisor",
    },
)
