"""What every report figure shares: the palette (one colour and line style per region,
:data:`REGION_COLORS`), the matplotlib style, and the axis helpers (per-step lines with a moving
average, "no data" panels, skipped-step shading, stacked shares, legends, saving).

Figures are ``matplotlib.figure.Figure`` objects, never ``pyplot``: no display, no global state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from restlit.report.logs import REGIONS, TIME_PARTS, RunLog

# One colour and line style per region, the same in every figure. Regions that often share a
# prior (PARAM_NAME/PARAM_VALUE, THINK/RESPONSE) differ in line style too, so overlapping curves
# stay distinguishable.
REGION_COLORS: dict[str, str] = {
    "FORMAT": "#1f77b4",  # blue
    "THINK": "#ff7f0e",  # orange
    "TOOL_NAME": "#2ca02c",  # green
    "PARAM_NAME": "#d62728",  # red
    "PARAM_VALUE": "#9467bd",  # purple
    "RESPONSE": "#8c564b",  # brown
    "OTHER": "#7f7f7f",  # grey
}
REGION_STYLES: dict[str, str] = {r: "-" for r in REGIONS} | {"PARAM_VALUE": "--", "RESPONSE": "--"}

# Non-region series: colours chosen away from the region palette.
TRAIN_COLOR = "#202020"
VAL_COLOR = "#e6550d"
EXTRA_COLORS = ("#3182bd", "#31a354", "#756bb1")
TIME_COLORS = dict(zip(TIME_PARTS, ("#6baed6", "#fdae6b", "#74c476")))
SKIP_COLOR = "#d9d9d9"


def _style() -> dict[str, Any]:
    return {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "axes.formatter.useoffset": False,
    }


def _new_figure(nrows: int, ncols: int, size: tuple[float, float], *, sharex: bool = True):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _smooth_window(n: int) -> int:
    """Moving-average window for ``n`` points: none for short runs."""
    w = n // 25
    return w if w >= 3 else 1


def _smoothing_note(n: int) -> str:
    w = _smooth_window(n)
    return f" (thin: per step; bold: moving average over {w} steps)" if w > 1 else ""


def _line(
    ax,
    xs: Sequence[int],
    ys: Sequence[float],
    *,
    color: str,
    label: str,
    ls: str = "-",
    std: Sequence[float] | None = None,
    marker: str = "o",
    lw: float = 1.8,
    zorder: int = 3,
    smooth: bool = True,
    window: int | None = None,
):
    """Per-step values; long noisy series (``smooth``) are drawn faint with a bold trailing moving
    average over ``window`` points on top (default: from the series' length; the figures pass the
    run's, so that every series of a run is smoothed alike). Returns the labelled line."""
    w = (window or _smooth_window(len(xs))) if smooth else 1
    if w > 1:
        ax.plot(xs, ys, color=color, lw=0.6, alpha=0.35 if len(xs) < 1000 else 0.2, ls=ls, zorder=zorder)
        (line,) = ax.plot(
            xs, _moving_average(ys, w), color=color, lw=lw + 0.2, ls=ls, label=label, zorder=zorder
        )
    else:
        (line,) = ax.plot(
            xs,
            ys,
            color=color,
            lw=lw,
            ls=ls,
            label=label,
            marker=marker if len(xs) <= 40 else None,
            ms=4,
            zorder=zorder,
        )
    if std is not None and len(std) == len(ys):
        lo = [y - s for y, s in zip(ys, std)]
        hi = [y + s for y, s in zip(ys, std)]
        if w > 1:
            lo, hi = _moving_average(lo, w), _moving_average(hi, w)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0, zorder=1)
    return line


def _no_data(ax, message: str) -> None:
    """Say in the panel that there is nothing to draw, instead of leaving an empty axis."""
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=10,
        color="#555555",
        wrap=True,
        bbox={"boxstyle": "round,pad=0.5", "fc": "#f6f6f6", "ec": "#cccccc"},
    )
    ax.grid(False)
    ax.tick_params(left=False, labelleft=False)


def _shade_skipped(ax, skipped: Sequence[int]) -> None:
    """Grey bands over steps that did not update the policy (consecutive steps merged, one artist
    however many there are)."""
    spans: list[list[int]] = []
    for s in skipped:
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    if spans:
        ax.broken_barh(
            [(a - 0.5, b - a + 1) for a, b in spans],
            (0, 1),
            transform=ax.get_xaxis_transform(),
            color=SKIP_COLOR,
            alpha=0.6 if len(spans) <= 100 else 0.35,
            lw=0,
            zorder=0,
        )


def _x_axis(ax, log: RunLog) -> None:
    from matplotlib.ticker import MaxNLocator

    steps = log.steps
    lo, hi = steps[0], steps[-1]
    pad = 0.5 if hi - lo < 20 else (hi - lo) * 0.01
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))


def _finish(fig, axes, log: RunLog, path: Path, *, legend_handles: list | None = None) -> Path:
    for ax in axes.flat:
        if ax.get_visible():
            _x_axis(ax, log)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    if legend_handles:
        # as many columns as fit the figure's width (about 6.5 px per character at 8.5 pt)
        width = fig.get_figwidth() * fig.dpi
        ncols = min(len(legend_handles), 5)
        while ncols > 1:
            rows = [legend_handles[i::ncols] for i in range(ncols)]
            need = sum(max(len(h.get_label()) for h in col) * 6.5 + 45 for col in rows)
            if need <= width * 0.95:
                break
            ncols -= 1
        fig.legend(handles=legend_handles, loc="outside lower center", ncols=ncols, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path


def _train_handle(label: str, log: RunLog):
    """Legend entry for the per-step training series (notes the smoothing of long runs)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=TRAIN_COLOR, lw=1.8, marker="o", ms=4, label=label + _smoothing_note(len(log.steps)))


def _skip_handle(count: int):
    from matplotlib.patches import Patch

    return Patch(color=SKIP_COLOR, alpha=0.6, label=f"skipped step, no update ({count})")


def _title(log: RunLog, what: str, name: str) -> str:
    n, k = len(log.steps), len(log.skipped_steps())
    tail = f", {k} skipped" if k else ""
    return f"{what} — {name} ({n} steps{tail})"


def _headroom(ax, ys: Iterable[float], factor: float = 1.15) -> None:
    top = max(ys, default=0.0)
    if top > 0:
        ax.set_ylim(0, top * factor)


def _stacked_shares(ax, log: RunLog, keys: dict[str, str], colors: dict[str, str]) -> int:
    """Stacked bars (short runs) or areas of ``keys`` (label -> column) per step. Returns the
    moving-average window used (1: none), 0 when no step has any of the columns."""
    steps = [s for s in log.steps if any(k in log.rows[s] for k in keys.values())]
    if not steps:
        return 0
    w = 1
    values = {label: [log.rows[s].get(col, 0.0) for s in steps] for label, col in keys.items()}
    if len(steps) <= 80:
        bottom = [0.0] * len(steps)
        for label, vals in values.items():
            if any(vals):
                ax.bar(steps, vals, bottom=bottom, width=0.8, color=colors[label], label=label, lw=0)
            bottom = [b + v for b, v in zip(bottom, vals)]
    else:  # long runs: areas, smoothed like the lines
        w = _smooth_window(len(steps))
        if w > 1:
            values = {label: _moving_average(vals, w) for label, vals in values.items()}
        labels = [label for label, vals in values.items() if any(vals)]
        ax.stackplot(
            steps,
            *[values[label] for label in labels],
            colors=[colors[lb] for lb in labels],
            labels=labels,
            lw=0,
        )
    return w
