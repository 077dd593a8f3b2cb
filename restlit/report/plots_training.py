"""The run-level figures of the report: ``rewards.png`` (rewards and exact match, with
validation), ``throughput.png`` (completion length, tokens per second, wall time per step),
``training.png`` (optimisation diagnostics) and ``sft.png`` (the SFT loss)."""

from __future__ import annotations

from pathlib import Path

from restlit.report.drawing import (
    EXTRA_COLORS,
    TIME_COLORS,
    TRAIN_COLOR,
    VAL_COLOR,
    _finish,
    _headroom,
    _line,
    _new_figure,
    _no_data,
    _shade_skipped,
    _skip_handle,
    _smooth_window,
    _smoothing_note,
    _stacked_shares,
    _title,
    _train_handle,
)
from restlit.report.logs import RunLog, duration

__all__ = ["plot_rewards", "plot_sft", "plot_throughput", "plot_training"]


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
