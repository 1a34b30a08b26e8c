"""Drawing a :class:`Series` as a PNG with matplotlib's Agg backend.

Imported only where a chart is drawn: in the renderer child (``python -m
harness.runtime.chart``) and by ``harness plot``; never in the daemon, which must not load
matplotlib or numpy. Two panels, 800 x 500 pixels: loss (left axis) and the key metric
(right axis) over steps; utilisation in percent over minutes since the start, one line
per GPU for a GPU job, the CPU figure for a CPU job. Each incident is a vertical line
in both panels (on the upper one at the step trained then) labelled with its rule.
About 30-60 KB; the series are thinned before they get here.
"""

from __future__ import annotations

import io

from ._series import Series

__all__ = ["DPI", "FIGSIZE", "render_png"]

FIGSIZE = (8.0, 5.0)  # inches
DPI = 100
_SEVERITY_COLOUR = {"abort": "#c0392b", "error": "#c0392b", "warn": "#e67e22", "info": "#7f8c8d"}
_MAX_LABELS = 12  # rule names written on the chart; the lines are drawn for all


def _split(xs: list[int], ys: list[float | None]) -> tuple[list[int], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def render_png(series: Series) -> bytes:
    """The chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    fig.suptitle(series.title[:90], fontsize=10)

    xs, loss = _split(series.steps, series.loss)
    if loss:
        top.plot(xs, loss, color="#2c3e50", linewidth=1.2, label="loss")
        top.set_ylabel("loss", fontsize=8)
    if series.key_metric:
        kx, key = _split(series.steps, series.key)
        if key:
            right = top.twinx()
            right.plot(kx, key, color="#27ae60", linewidth=1.2, label=series.key_metric)
            right.set_ylabel(series.key_metric[:30], fontsize=8, color="#27ae60")
            right.tick_params(labelsize=7)
    if not loss and not (series.key_metric and any(v is not None for v in series.key)):
        top.text(
            0.5,
            0.5,
            "no step metrics yet",
            ha="center",
            va="center",
            fontsize=9,
            transform=top.transAxes,
            color="#7f8c8d",
        )
    top.set_xlabel("step", fontsize=8)
    top.tick_params(labelsize=7)
    top.grid(alpha=0.3)

    if series.util_t:
        minutes = [t / 60 for t in series.util_t]
        for name, values in series.util.items():
            pts = [(m, v * 100) for m, v in zip(minutes, values, strict=True) if v is not None]
            if pts:
                bottom.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.0, label=name)
        if series.util:
            bottom.legend(fontsize=7, loc="upper right", ncols=min(len(series.util), 4))
    else:
        bottom.text(
            0.5,
            0.5,
            "no utilisation samples yet",
            ha="center",
            va="center",
            fontsize=9,
            transform=bottom.transAxes,
            color="#7f8c8d",
        )
    bottom.set_ylim(0, 105)
    bottom.set_ylabel("utilisation %", fontsize=8)
    bottom.set_xlabel("minutes since start", fontsize=8)
    bottom.tick_params(labelsize=7)
    bottom.grid(alpha=0.3)

    for n, marker in enumerate(series.markers):
        colour = _SEVERITY_COLOUR.get(marker.severity, "#e67e22")
        label = marker.rule if n < _MAX_LABELS else None
        bottom.axvline(marker.t / 60, color=colour, linestyle="--", linewidth=0.9)
        if label:
            bottom.annotate(
                label,
                (marker.t / 60, 102),
                fontsize=6,
                color=colour,
                rotation=90,
                ha="right",
                va="top",
                annotation_clip=False,
            )
        if marker.step is not None and loss:
            top.axvline(marker.step, color=colour, linestyle="--", linewidth=0.9)
            if label:
                top.annotate(
                    label,
                    (marker.step, 1.0),
                    xycoords=("data", "axes fraction"),
                    fontsize=6,
                    color=colour,
                    rotation=90,
                    ha="right",
                    va="top",
                )

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()
