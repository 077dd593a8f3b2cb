"""The per-region figures of the report: ``entropy.png`` (running mean entropy and token share per
region) and ``weights.png`` (mean token weight per region, the curriculum's priors, its progress)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restlit.report.drawing import (
    REGION_COLORS,
    REGION_STYLES,
    _finish,
    _headroom,
    _line,
    _new_figure,
    _no_data,
    _smooth_window,
    _smoothing_note,
    _stacked_shares,
    _title,
)
from restlit.report.logs import (
    PRIOR_PREFIX,
    REGIONS,
    RunLog,
    config_value,
    curriculum_priors,
    regions_without_tokens,
)

__all__ = ["plot_entropy", "plot_weights"]


def _region_lines(ax, log: RunLog, prefix: str, *, empty_when_zero: bool) -> list[str]:
    """One line per region from ``prefix<REGION>`` columns; a region's step counts only when the
    region had tokens (``tokens/<REGION>`` > 0, or, without that column, a non-zero value when
    ``empty_when_zero``). Returns the regions without data."""
    win = _smooth_window(len(log.steps))
    missing = []
    for region in REGIONS:
        xs, ys = [], []
        for s in log.steps:
            row = log.rows[s]
            key = f"{prefix}{region}"
            if key not in row:
                continue
            share = row.get(f"tokens/{region}")
            if share is not None and share <= 0:
                continue
            if share is None and empty_when_zero and row[key] == 0.0:
                continue
            xs.append(s)
            ys.append(row[key])
        if xs:
            _line(
                ax,
                xs,
                ys,
                color=REGION_COLORS[region],
                ls=REGION_STYLES[region],
                label=region,
                marker="o",
                window=win,
            )
        else:
            missing.append(region)
    return missing


def _region_handles(log: RunLog) -> list:
    """A figure legend with every region in the fixed order; regions without tokens are marked."""
    from matplotlib.lines import Line2D

    empty = regions_without_tokens(log)
    return [
        Line2D(
            [],
            [],
            color=REGION_COLORS[r],
            ls=REGION_STYLES[r],
            lw=2.2,
            label=f"{r} (no tokens)" if r in empty else r,
        )
        for r in REGIONS
    ]


def plot_entropy(log: RunLog, path: Path, *, name: str = "run") -> Path:
    """Running mean entropy per region (and of the structured regions); token share per region."""
    win = _smooth_window(len(log.steps))
    fig, axes = _new_figure(2, 1, (12, 8))
    ax, ax2 = axes[0, 0], axes[1, 0]
    ax.set_title(
        "Mean token entropy per region, the statistics the ResT weights use" + _smoothing_note(len(log.steps))
    )
    ax.set_ylabel("entropy (nats)")
    drawn: list[str] = []
    if not any(log.has(f"entropy/{r}") for r in REGIONS):
        _no_data(ax, "no data: entropy/<REGION> was not logged")
    else:
        missing = _region_lines(ax, log, "entropy/", empty_when_zero=True)
        drawn = [r for r in REGIONS if r not in missing]
        xs, ys = log.series("curriculum/structured_entropy")
        pairs = [(x, y) for x, y in zip(xs, ys) if y != 0.0]
        if pairs:
            line = _line(
                ax,
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                color="#000000",
                ls=":",
                lw=2.4,
                window=win,
                label="structured regions (tool name, parameters, format)",
                marker="D",
            )
            ax.legend(handles=[line], loc="upper right", fontsize=8.5)
        if not drawn:
            _no_data(ax, "no data: no region had tokens in any step")
        else:
            _headroom(ax, [y for line in ax.get_lines() for y in line.get_ydata()])

    ax2.set_title("Share of completion tokens per region (steps that updated the policy)")
    ax2.set_ylabel("share of tokens")
    shares = {r: f"tokens/{r}" for r in REGIONS}
    w = _stacked_shares(ax2, log, shares, REGION_COLORS)
    if w:
        ax2.set_ylim(0, 1.0)
        if w > 1:
            ax2.set_title(
                f"Share of completion tokens per region (steps that updated the policy; moving average "
                f"over {w} steps)"
            )
    else:
        _no_data(
            ax2,
            "no data: tokens/<REGION> is logged only on steps that update the policy\n"
            "(every step was skipped)",
        )
    fig.suptitle(_title(log, "Entropy per region", name), fontsize=13)
    return _finish(fig, axes, log, path, legend_handles=_region_handles(log))


def plot_weights(
    log: RunLog, path: Path, *, name: str = "run", cfg: Any = None, raw: dict[str, Any] | None = None
) -> Path:
    """Mean weight per region per step; the curriculum's priors; its progress."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 3, 1.6]})
    ax, ax2, ax3 = axes[:, 0]
    ax.set_title(
        "Mean token weight per region, as applied in the policy gradient" + _smoothing_note(len(log.steps))
    )
    ax.set_ylabel("mean weight (1 = plain GRPO)")
    if not any(log.has(f"weight/{r}") for r in REGIONS):
        _no_data(
            ax,
            "no data: weight/<REGION> is logged only on steps that update the policy"
            + ("\n(every step was skipped)" if log.skipped_steps() else ""),
        )
    else:
        _region_lines(ax, log, "weight/", empty_when_zero=False)
        ax.axhline(1.0, color="#999999", lw=1, ls=":", zorder=1)
        _headroom(ax, [y for line in ax.get_lines() for y in line.get_ydata()])

    mode, steps, priors = curriculum_priors(log, cfg, raw)
    titles = {
        "entropy": "Curriculum: region priors at the step's progress ν, as training logged them "
        "(weights.mode: entropy)",
        "static": "Curriculum: the released code's per-step region constants (weights.mode: static)",
    }
    ax2.set_title(titles.get(mode, f"Curriculum priors (weights.mode: {mode})"))
    ax2.set_ylabel("prior (before normalisation)")
    if steps:
        for region in REGIONS:
            if any(v > 0 for v in priors[region]):
                _line(
                    ax2,
                    steps,
                    priors[region],
                    color=REGION_COLORS[region],
                    ls=REGION_STYLES[region],
                    label=region,
                    marker="o",
                    lw=1.6,
                    smooth=False,
                )
        _headroom(ax2, [y for line in ax2.get_lines() for y in line.get_ydata()])
        if mode == "static":
            ax2.text(
                0.99,
                0.03,
                "RESPONSE and OTHER: constant 0 (not drawn)",
                ha="right",
                va="bottom",
                transform=ax2.transAxes,
                fontsize=8,
                color="#555555",
            )
    elif mode == "uniform":
        _no_data(ax2, "weights.mode: uniform — every token weighs 1, there are no priors")
    else:
        _no_data(ax2, f"not logged: {PRIOR_PREFIX}<REGION> (a run from before training logged its priors)")

    ax3.set_title("Curriculum progress ν")
    ax3.set_ylabel("ν")
    xs, ys = log.series("curriculum/progress")
    if xs:
        _line(ax3, xs, ys, color="#000000", label="ν", lw=2, smooth=False)
        ax3.set_ylim(-0.03, 1.05)
        by = config_value(raw, "objective.curriculum.by")
        if by:
            ax3.text(
                0.01,
                0.93,
                f"curriculum.by: {by}",
                ha="left",
                va="top",
                transform=ax3.transAxes,
                fontsize=8.5,
                color="#333333",
            )
    else:
        _no_data(ax3, "no data: curriculum/progress was not logged")
    fig.suptitle(_title(log, "Token weights and curriculum", name), fontsize=13)
    return _finish(fig, axes, log, path, legend_handles=_region_handles(log))
