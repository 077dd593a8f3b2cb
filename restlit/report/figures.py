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

The shared palette and axis helpers are in :mod:`restlit.report.drawing`, the per-region figures
in :mod:`restlit.report.plots_regions`, the others in :mod:`restlit.report.plots_training`;
:func:`make_figures` draws them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restlit.report.drawing import REGION_COLORS, REGION_STYLES, _style
from restlit.report.logs import RunLog, is_sft_log
from restlit.report.plots_regions import plot_entropy, plot_weights
from restlit.report.plots_training import plot_rewards, plot_sft, plot_throughput, plot_training

__all__ = ["FIGURES", "REGION_COLORS", "REGION_STYLES", "make_figures", "plot_entropy", "plot_rewards",
           "plot_sft", "plot_throughput", "plot_training", "plot_weights"]

FIGURES = ("rewards", "entropy", "weights", "throughput", "training")


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
