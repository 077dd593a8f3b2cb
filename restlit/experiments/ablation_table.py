"""The ablation's table and curves: per-model interval cells of the held-out metrics
(:func:`interval_cells`, shared with ``restlit demo``), the Markdown table of
:func:`restlit.experiments.ablation.summarize`'s output (:func:`markdown`, :func:`paired_cell`)
and the reward / held-out curves (:func:`plot_curves`). Pure formatting: nothing here trains or
scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restlit.stats import Interval, wilson_interval

__all__ = ["interval_cells", "markdown", "paired_cell", "param_f1", "plot_curves"]


def param_f1(tp: float, pred: float, gold: float) -> float | None:
    """Micro F1 of parameter triples, ``2 tp / (pred + gold)``; None when there is nothing to count."""
    return 2 * tp / (pred + gold) if pred + gold else None


def interval_cells(scores: dict[str, list[float | None]]) -> dict[str, Interval | None]:
    """The held-out metrics (and ``accuracy``) of one model with their Wilson 95% intervals over the
    items that count for each (tool-name accuracy: items whose reference has a call). Parameter F1
    is not a proportion of items: its interval is degenerate (the value itself), ``n`` the items."""
    cells: dict[str, Interval | None] = {}
    for key in ("accuracy", "exact_match", "format_validity", "tool_name_accuracy"):
        values = [v for v in scores.get(key, []) if v is not None]
        cells[key] = wilson_interval(int(sum(values)), len(values)) if key in scores else None
    if "param_tp" in scores:
        f1 = param_f1(sum(scores["param_tp"]), sum(scores["param_pred"]), sum(scores["param_gold"]))
        n = len(scores["param_tp"])
        cells["param_f1"] = None if f1 is None else Interval(f1, f1, f1, n)
    return cells


def _pct(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    if cell["low"] == cell["high"]:
        return f"{100 * cell['value']:.1f}"
    return f"{100 * cell['value']:.1f} [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}]"


def markdown(summary: dict[str, Any]) -> str:
    """The table of :func:`restlit.experiments.ablation.summarize`'s output (percentages with 95% intervals)."""
    base = summary["baseline"]
    headers = ["arm", "final held-out EM %", "best EM %", "format valid %", "tool name %", "param F1 %",
               f"EM vs {base} (points) [95%], p", "EM vs start (points) [95%], p"]
    extra = [s for s in summary["suites"] if s != "heldout"]
    headers += [f"{s} %" for s in extra] + [f"{s} vs {base}, p" for s in extra] + [f"{s} vs start, p" for s in extra]
    headers.append("last train reward")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for arm, row in summary["arms"].items():
        cells = [arm]
        if "heldout" in summary["suites"]:
            cells += [_pct(row["heldout/exact_match"]), _pct(row["heldout/best_exact_match"]),
                      _pct(row["heldout/format_validity"]), _pct(row["heldout/tool_name_accuracy"]),
                      _pct(row["heldout/param_f1"]), paired_cell(row.get(f"heldout/paired_vs_{base}")),
                      paired_cell(row.get("heldout/paired_vs_start"))]
        else:
            cells += ["-"] * 7
        cells += [_pct(row[f"{s}/accuracy"]) for s in extra]
        cells += [paired_cell(row.get(f"{s}/paired_vs_{base}")) for s in extra]
        cells += [paired_cell(row.get(f"{s}/paired_vs_start")) for s in extra]
        rewards = list(row["train_reward"].values())
        cells.append(f"{rewards[-1]:.2f}" if rewards else "-")
        lines.append("| " + " | ".join(cells) + " |")
    over = {row["heldout/exact_match"]["over"] for row in summary["arms"].values()
            if row.get("heldout/exact_match")}
    if summary["start"]:
        def score(suite: str, key: str) -> str:
            value = summary["start"].get(suite, {}).get(key)
            return "-" if value is None else f"{100 * value:.1f}"

        held = [score("heldout", "exact_match"), "-", *(score("heldout", k) for k in
                                                      ("format_validity", "tool_name_accuracy", "param_f1")), "-", "-"]
        cells = ["start (before RL)", *held, *(score(s, "accuracy") for s in extra), *["-"] * (2 * len(extra) + 1)]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Intervals: 95%, " + ("Wilson over the items (one seed)" if over == {"items"} else
            "Student-t over seeds") + f"; paired differences: per item, {base} subtracted, t interval and exact "
            "sign-test p-value (wins+/losses- count the items that differ); vs start: the arm's final model against "
            "the shared start model on the same items; best EM: the best evaluation of each seed (optimistic: "
            "a maximum).")
    if summary["unfinished"]:
        note += f" Not finished (not in the table): {', '.join(summary['unfinished'])}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def paired_cell(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    x = d["difference"]
    return (f"{100 * x['value']:+.1f} [{100 * x['low']:+.1f}, {100 * x['high']:+.1f}], p={d['p_value']:.2f} "
            f"({d['wins']}+/{d['losses']}-)")


def plot_curves(summary: dict[str, Any], out: Path) -> list[Path]:
    """``reward.png`` (training reward per step) and ``heldout.png`` (the first suite's score at
    each evaluation), one line per arm (mean over seeds)."""
    from matplotlib.figure import Figure

    paths = []
    suite = summary["suites"][0]
    for name, key, ylabel in (("reward.png", "train_reward", "training reward (mean of the step's completions)"),
                              ("heldout.png", "curve", f"{suite} {'exact match' if suite == 'heldout' else 'accuracy'}")):
        fig = Figure(figsize=(7.0, 4.0), layout="constrained")
        ax = fig.subplots()
        for arm, row in summary["arms"].items():
            xs = [int(s) for s in row[key]]
            ys = [v * (100 if key == "curve" else 1) for v in row[key].values()]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=arm)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel + (" %" if key == "curve" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        path = out / name
        fig.savefig(path, facecolor="white")
        paths.append(path)
    return paths
