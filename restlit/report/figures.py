"""The report's figures, drawn with matplotlib's Agg backend (``matplotlib.figure.Figure``, never
``pyplot``, so no display and no global state is involved):

``rewards.png``
    total, format and correctness reward (mean over the step's completions, with a +-1 std band)
    and the exact-match rate; validation points (greedy decoding) where validation ran; steps
    that did not update the policy are shaded.
``entropy.png``
    the running mean entropy of each region (the statistics the weights use) with the structured
    regions' entropy that drives ``curriculum.by: entropy``; below it, each region's share of the
    completion tokens.
``weights.png``
    the mean token weight each region actually received per step; below it, the curriculum: the
    region priors training logged (``curriculum/prior/<REGION>``: the schedule at the step's
    progress ``nu`` in ``entropy`` mode, the released-code constants in ``static`` mode); at the
    bottom, ``nu`` itself.
``throughput.png``
    mean completion length with the truncated fraction, tokens per second, and the step's wall
    time split into rollout / scoring / update.
``training.png``
    loss, gradient norm, learning rate, clip fractions, approximate KL and policy entropy.
``sft.png``
    the SFT loss, for an SFT run or when the run directory holds an ``sft/`` run.

Every region has one colour in every figure (:data:`REGION_COLORS`); a series without data is
said so in its panel rather than drawn as an empty axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from restlit.report.logs import (
    PRIOR_PREFIX,
    REGIONS,
    TIME_PARTS,
    RunLog,
    config_value,
    curriculum_priors,
    duration,
    is_sft_log,
    regions_without_tokens,
)

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


FIGURES = ("rewards", "entropy", "weights", "throughput", "training")


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


def plot_rewards(log: RunLog, path: Path, *, name: str = "run") -> Path:
    """Total, format and correctness reward and the exact-match rate over steps, with validation."""
    win = _smooth_window(len(log.steps))
    from matplotlib.lines import Line2D

    fig, axes = _new_figure(2, 2, (12, 7.2))
    skipped = log.skipped_steps()
    panels = [
        ("total", "Total reward", "reward (mean over completions)"),
        ("format", "Format reward", "reward"),
        ("correctness", "Correctness reward", "reward"),
        ("exact_match", "Exact-match rate", "fraction of completions"),
    ]
    has_val = has_train = False
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        xs, ys = log.series(f"reward/{key}")
        vx, vy = log.series(f"val/{key}")
        if not xs and not vx:
            _no_data(ax, f"no data: reward/{key} was not logged")
            continue
        _shade_skipped(ax, skipped)
        if xs:
            has_train = True
            sx, sd = log.series(f"reward/{key}_std")
            std = sd if sx == xs else None
            _line(ax, xs, ys, color=TRAIN_COLOR, label="train", std=std, window=win)
        if vx:
            has_val = True
            ax.plot(vx, vy, color=VAL_COLOR, lw=1.6, ls="--", marker="s", ms=6, label="validation", zorder=4)
        if key == "exact_match":
            ax.set_ylim(-0.03, 1.03)
    handles = []
    if has_train:
        handles.append(_train_handle("train: mean over the step's completions (band: ±1 std)", log))
    if has_val:
        handles.append(
            Line2D(
                [],
                [],
                color=VAL_COLOR,
                lw=1.6,
                ls="--",
                marker="s",
                ms=6,
                label="validation: greedy, held-out prompts",
            )
        )
    if skipped:
        handles.append(_skip_handle(len(skipped)))
    fig.suptitle(_title(log, "Rewards", name), fontsize=13)
    return _finish(fig, axes, log, path, legend_handles=handles)


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


def plot_throughput(log: RunLog, path: Path, *, name: str = "run") -> Path:
    """Completion length (+ truncated fraction), tokens/s, and the step's time split."""
    win = _smooth_window(len(log.steps))
    fig, axes = _new_figure(3, 1, (12, 9.5))
    ax, ax2, ax3 = axes[:, 0]
    ax.set_title("Completion length" + _smoothing_note(len(log.steps)))
    ax.set_ylabel("mean tokens per completion")
    xs, ys = log.series("completion/length")
    if xs:
        _line(ax, xs, ys, color=EXTRA_COLORS[0], label="mean length", window=win)
        _headroom(ax, ys, 1.25)
        tx, ty = log.series("completion/truncated")
        handles, labels = ax.get_legend_handles_labels()
        if tx:
            twin = ax.twinx()
            twin.plot(
                tx,
                ty,
                color=VAL_COLOR,
                lw=1.4,
                ls="--",
                label="truncated fraction",
                marker="^" if len(tx) <= 40 else None,
                ms=4,
            )
            twin.set_ylim(-0.03, 1.25)
            twin.set_ylabel("truncated fraction")
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, loc="upper right", fontsize=8.5, ncols=2)
    else:
        _no_data(ax, "no data: completion/length was not logged")

    ax2.set_title(
        "Throughput: completion tokens per second of step wall time" + _smoothing_note(len(log.steps))
    )
    ax2.set_ylabel("tokens / s")
    xs, ys = log.series("throughput/tokens_per_s")
    if xs:
        _line(ax2, xs, ys, color=EXTRA_COLORS[1], label="tokens / s", window=win)
        _headroom(ax2, ys)
    else:
        _no_data(ax2, "no data: throughput/tokens_per_s was not logged")

    ax3.set_title("Wall time per step")
    ax3.set_ylabel("seconds")
    parts = {k: f"time/{k}" for k in TIME_COLORS}
    w = _stacked_shares(ax3, log, parts, TIME_COLORS)
    if w:
        ax3.legend(loc="upper left", fontsize=8.5, ncols=3)
        sums = {k: sum(log.series(c)[1]) for k, c in parts.items()}
        total = sum(sums.values())
        if total > 0:
            share = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sums.items())
            smoothed = f", moving average over {w} steps" if w > 1 else ""
            ax3.set_title(f"Wall time per step{smoothed} (total {duration(total)}: {share})")
        tops = [sum(log.rows[st].get(c, 0.0) for c in parts.values()) for st in log.steps]
        _headroom(ax3, tops, 1.2)
    else:
        _no_data(ax3, "no data: time/rollout, time/scoring, time/update were not logged")
    fig.suptitle(_title(log, "Completion length and throughput", name), fontsize=13)
    return _finish(fig, axes, log, path)


def plot_training(log: RunLog, path: Path, *, name: str = "run") -> Path:
    """Optimisation diagnostics: loss, gradient norm, learning rate, clipping, KL, entropy."""
    win = _smooth_window(len(log.steps))

    fig, axes = _new_figure(2, 3, (14, 7.2))
    skipped = log.skipped_steps()
    panels = [
        ("Loss", "loss", [("train/loss", "loss")]),
        ("Gradient norm (before clipping)", "L2 norm", [("train/grad_norm", "grad norm")]),
        ("Learning rate", "lr", [("train/lr", "lr")]),
        (
            "Clipped tokens",
            "fraction of tokens",
            [("train/clip_frac", "PPO clip"), ("train/dual_clip_frac", "dual clip")],
        ),
        ("Approximate KL to the rollout policy", "KL (nats)", [("train/approx_kl", "approx. KL")]),
        (
            "Policy entropy",
            "entropy (nats)",
            [("train/entropy", "mean"), ("train/entropy_weighted", "weighted mean")],
        ),
    ]
    for ax, (title, ylabel, series) in zip(axes.flat, panels):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        found = [(k, lb) for k, lb in series if log.has(k)]
        if not found:
            why = "every step was skipped" if skipped and len(skipped) == len(log.steps) else "not logged"
            _no_data(ax, f"no data: {series[0][0]}\n({why})")
            continue
        _shade_skipped(ax, skipped)
        for (key, label), color in zip(found, (TRAIN_COLOR, EXTRA_COLORS[0])):
            xs, ys = log.series(key)
            _line(
                ax,
                xs,
                ys,
                color=color,
                label=label,
                ls="-" if color == TRAIN_COLOR else "--",
                window=win,
                smooth=key != "train/lr",
            )
        if len(found) > 1:
            ax.legend(loc="best", fontsize=8.5)
        if title == "Learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    handles = []
    if any(log.has(k) for _t, _y, series in panels for k, _lb in series):
        handles.append(_train_handle("per step", log))
    if skipped:
        handles.append(_skip_handle(len(skipped)))
    fig.suptitle(_title(log, "Optimisation", name), fontsize=13)
    return _finish(fig, axes, log, path, legend_handles=handles)


def plot_sft(log: RunLog, path: Path, *, name: str = "sft") -> Path:
    """The supervised warm start's loss (and target tokens per step)."""
    win = _smooth_window(len(log.steps))
    fig, axes = _new_figure(1, 1, (12, 4.8))
    ax = axes[0, 0]
    ax.set_title(
        "SFT loss: mean negative log-likelihood of the target tokens" + _smoothing_note(len(log.steps))
    )
    ax.set_ylabel("loss (nats / token)")
    xs, ys = log.series("sft/loss")
    if xs:
        _line(ax, xs, ys, color=TRAIN_COLOR, label="loss", window=win)
        _headroom(ax, ys, 1.1)
        tx, ty = log.series("sft/target_tokens")
        if tx:
            twin = ax.twinx()
            twin.plot(tx, ty, color=EXTRA_COLORS[0], lw=1.2, ls="--", label="target tokens / step", alpha=0.8)
            twin.set_ylabel("target tokens per step")
            _headroom(twin, ty, 1.45)
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8.5)
    else:
        _no_data(ax, "no data: sft/loss was not logged")
    fig.suptitle(f"Supervised warm start — {name} ({len(log.steps)} steps)", fontsize=13)
    return _finish(fig, axes, log, path)




def make_figures(
    log: RunLog,
    out_dir: Path,
    *,
    name: str = "run",
    cfg: Any = None,
    raw: dict[str, Any] | None = None,
    sft_log: RunLog | None = None,
) -> dict[str, Path]:
    """Write the figures for ``log`` into ``out_dir``; returns ``{name: path}`` in report order.
    An SFT run's log gets only ``sft.png``; ``sft_log`` (a run's ``sft/`` subdirectory) adds it."""
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    with matplotlib.rc_context(_style()):
        if is_sft_log(log):
            figures["sft"] = plot_sft(log, out_dir / "sft.png", name=name)
            return figures
        figures["rewards"] = plot_rewards(log, out_dir / "rewards.png", name=name)
        figures["entropy"] = plot_entropy(log, out_dir / "entropy.png", name=name)
        figures["weights"] = plot_weights(log, out_dir / "weights.png", name=name, cfg=cfg, raw=raw)
        figures["throughput"] = plot_throughput(log, out_dir / "throughput.png", name=name)
        figures["training"] = plot_training(log, out_dir / "training.png", name=name)
        if sft_log is not None and sft_log.has("sft/loss"):
            figures["sft"] = plot_sft(sft_log, out_dir / "sft.png", name=f"{name}/sft")
    return figures
