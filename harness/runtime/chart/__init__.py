"""Charts of a run: loss and key metric over steps, utilisation per device, incidents.

- :class:`UtilLog` records the utilisation series (``util.jsonl`` in the run dir) from
  the watch loop's probe samples, downsampled and bounded;
- :func:`describe` builds a chart's description from a run's row and incidents, and
  :func:`load_series` reads what it shows from the run dir (stdlib only);
- :class:`ChartRenderer` draws it in a child process (``python -m
  harness.runtime.chart``), with a timeout, so the daemon never loads matplotlib or
  numpy; :func:`chart_png` draws it in this process (``harness plot``).

Names are imported on first use: the watch loop imports this package for the util log.
"""

from typing import TYPE_CHECKING, Any

from harness._lazy import exports

__all__ = [
    "CHART_COMMAND",
    "MAX_POINTS",
    "PNG_SIGNATURE",
    "UTIL_FILE",
    "ChartError",
    "ChartRenderer",
    "Marker",
    "Series",
    "UtilLog",
    "chart_png",
    "describe",
    "describe_run",
    "load_series",
]

if TYPE_CHECKING:
    from harness.runtime.chart._driver import (
        CHART_COMMAND,
        PNG_SIGNATURE,
        ChartError,
        ChartRenderer,
    )
    from harness.runtime.chart._series import (
        MAX_POINTS,
        Marker,
        Series,
        describe,
        describe_run,
        load_series,
    )
    from harness.runtime.chart._util import UTIL_FILE, UtilLog

__getattr__, __dir__ = exports(
    __name__,
    {
        "CHART_COMMAND": "harness.runtime.chart._driver",
        "PNG_SIGNATURE": "harness.runtime.chart._driver",
        "ChartError": "harness.runtime.chart._driver",
        "ChartRenderer": "harness.runtime.chart._driver",
        "MAX_POINTS": "harness.runtime.chart._series",
        "Marker": "harness.runtime.chart._series",
        "Series": "harness.runtime.chart._series",
        "describe": "harness.runtime.chart._series",
        "describe_run": "harness.runtime.chart._series",
        "load_series": "harness.runtime.chart._series",
        "UTIL_FILE": "harness.runtime.chart._util",
        "UtilLog": "harness.runtime.chart._util",
    },
)


def chart_png(desc: dict[str, Any]) -> bytes:
    """The chart of ``desc`` drawn in this process (loads matplotlib: not for the daemon)."""
    from harness.runtime.chart._render import render_png
    from harness.runtime.chart._series import load_series

    return render_png(load_series(desc))
