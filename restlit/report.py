"""``restlit report``: figures and a Markdown summary from a run directory's logs.

Everything here reads files that ``restlit fit`` (and ``restlit sft`` / ``restlit eval``) wrote
and draws with matplotlib's Agg backend (``matplotlib.figure.Figure``, never ``pyplot``, so no
display and no global state is involved):

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
    region priors at the step's progress ``nu`` (``entropy`` mode; the released-code constants in
    ``static`` mode); at the bottom, ``nu`` itself.
``throughput.png``
    mean completion length with the truncated fraction, tokens per second, and the step's wall
    time split into rollout / scoring / update.
``training.png``
    loss, gradient norm, learning rate, clip fractions, approximate KL and policy entropy.
``sft.png``
    the SFT loss, for an SFT run or when the run directory holds an ``sft/`` run.

``report.md`` embeds them with relative links and adds the resolved config, the data counts from
the prepared dataset's ``manifest.json``, the final metrics and any ``eval.json`` summaries.

Steps are 1-based in figures and tables (metrics.csv's ``step`` column + 1, the numbering the
checkpoints and the reward schedule use). Every region has one colour in every figure
(:data:`REGION_COLORS`); a series without data is said so in its panel rather than drawn as an
empty axis.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restlit.errors import UserError
from restlit.regions import Region

REGIONS: tuple[str, ...] = tuple(r.name for r in Region)
STRUCTURED = ("TOOL_NAME", "PARAM_NAME", "PARAM_VALUE", "FORMAT")

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
TIME_COLORS = {"rollout": "#6baed6", "scoring": "#fdae6b", "update": "#74c476"}
SKIP_COLOR = "#d9d9d9"

FIGURES = ("rewards", "entropy", "weights", "throughput", "training")
DEFAULT_LAST_N = 10

# Metrics shown in the final-metrics table, in this order (those present in the log).
SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("reward/total", "reward: total"),
    ("reward/format", "reward: format"),
    ("reward/correctness", "reward: correctness"),
    ("reward/exact_match", "exact-match rate"),
    ("val/total", "validation reward: total"),
    ("val/format", "validation reward: format"),
    ("val/correctness", "validation reward: correctness"),
    ("val/exact_match", "validation exact-match rate"),
    ("completion/length", "completion length (tokens)"),
    ("completion/truncated", "truncated fraction"),
    ("train/loss", "loss"),
    ("train/grad_norm", "gradient norm"),
    ("train/lr", "learning rate"),
    ("train/clip_frac", "clip fraction"),
    ("train/approx_kl", "approx. KL"),
    ("train/entropy", "policy entropy (nats)"),
    ("curriculum/progress", "curriculum progress ν"),
    ("curriculum/structured_entropy", "structured-region entropy (nats)"),
    ("throughput/tokens_per_s", "tokens / s"),
    ("time/rollout", "time: rollout (s)"),
    ("time/scoring", "time: scoring (s)"),
    ("time/update", "time: update (s)"),
    ("sft/loss", "SFT loss"),
    ("sft/target_tokens", "SFT target tokens / step"),
)


class ReportError(UserError):
    """A run directory that cannot be reported on (missing or unreadable logs); one line."""


# ------------------------------------------------------------------------------------------------
# Reading the logs
# ------------------------------------------------------------------------------------------------


@dataclass
class RunLog:
    """The rows of one ``metrics.csv``, merged by step: ``rows[step]`` maps a column to its value
    (1-based steps; a column absent from a step, e.g. ``train/*`` on a skipped step, is absent
    from its dict). Non-finite values are kept out, so a present value is always plottable."""

    path: Path
    rows: dict[int, dict[str, float]]

    @property
    def steps(self) -> list[int]:
        return sorted(self.rows)

    @property
    def columns(self) -> set[str]:
        return {k for row in self.rows.values() for k in row}

    def has(self, key: str) -> bool:
        return any(key in row for row in self.rows.values())

    def series(self, key: str, steps: Iterable[int] | None = None) -> tuple[list[int], list[float]]:
        """The steps that logged ``key`` and the values, in step order."""
        xs, ys = [], []
        for s in self.steps if steps is None else steps:
            row = self.rows.get(s)
            if row is not None and key in row:
                xs.append(s)
                ys.append(row[key])
        return xs, ys

    def skipped_steps(self) -> list[int]:
        return [s for s in self.steps if self.rows[s].get("skipped", 0.0) > 0]

    def skip_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            for k, v in row.items():
                if k.startswith("skipped/") and v > 0:
                    reason = k.split("/", 1)[1]
                    out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))


def read_metrics(path: str | Path) -> RunLog:
    """Read a Lightning CSVLogger ``metrics.csv``; rows sharing a ``step`` are merged (Lightning
    writes validation and training keys of one step on separate rows). ReportError when the file
    is missing, has no ``step`` column or no rows."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    rows: dict[int, dict[str, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "step" not in reader.fieldnames:
                raise ReportError(f"{path}: not a metrics log (no 'step' column)")
            for raw in reader:
                try:
                    step = int(float(raw.get("step") or "")) + 1
                except ValueError:
                    continue  # a repeated header or a torn last line
                row = rows.setdefault(step, {})
                for key, text in raw.items():
                    if key in (None, "step", "epoch") or text in (None, ""):
                        continue
                    try:
                        value = float(text)
                    except (TypeError, ValueError):
                        continue
                    if math.isfinite(value):
                        row[key] = value
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise ReportError(f"{path}: no logged steps yet")
    return RunLog(path, rows)


def load_run_config(run_dir: Path) -> tuple[Any | None, dict[str, Any] | None, str | None]:
    """``(RunConfig or None, raw dict or None, text or None)`` from ``run_dir/config.yaml``. The
    typed config may be None for a config an older or newer restlit wrote; the raw dict is then
    still used where it can be."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None, None, None
    text = path.read_text(encoding="utf-8")
    try:
        import yaml

        raw = yaml.safe_load(text)
        raw = raw if isinstance(raw, dict) else None
    except Exception:  # noqa: BLE001 - a broken file is reported, not fatal
        raw = None
    try:
        from restlit.config import load_config

        cfg = load_config(path)
    except Exception:  # noqa: BLE001
        cfg = None
    return cfg, raw, text


def _get(raw: dict[str, Any] | None, dotted: str, default: Any = None) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def find_manifest(cfg: Any, raw: dict[str, Any] | None) -> tuple[Path | None, str]:
    """The prepared dataset's ``manifest.json`` for the run's data config and how it was found
    (or, when it was not, where it was looked for)."""
    data = getattr(cfg, "data", None)
    prepared = getattr(data, "prepared", None) if data is not None else _get(raw, "data.prepared")
    if prepared:
        path = Path(prepared) / "manifest.json"
        return (path, "data.prepared") if path.is_file() else (None, f"not found at {path} (data.prepared)")
    raw_files = list(getattr(data, "raw", None) or _get(raw, "data.raw", []) or [])
    cache_dir = getattr(data, "cache_dir", None) if data is not None else _get(raw, "data.cache_dir")
    if not raw_files or not cache_dir:
        return None, "the run's config names no data.prepared nor data.raw"
    if data is not None:
        from restlit.data import prepared_dir

        # a relative data.raw path fails from another working directory: then match below
        with contextlib.suppress(Exception):
            path = prepared_dir(data) / "manifest.json"
            if path.is_file():
                return path, "data.raw, prepared into data.cache_dir"
    # The raw files may be elsewhere now (relative paths, another cwd): match the cache entries'
    # manifests on the inputs and options instead of on the files' hash.
    options = {
        k: getattr(data, k, None) if data is not None else _get(raw, f"data.{k}")
        for k in ("format", "on_invalid", "val_fraction", "seed")
    }
    matches = []
    for candidate in sorted(Path(cache_dir).glob("prepared-*/manifest.json")):
        try:
            m = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if [i.get("path") for i in m.get("inputs", [])] != [str(p) for p in raw_files]:
            continue
        if any(v is not None and m.get("options", {}).get(k) != v for k, v in options.items()):
            continue
        matches.append(candidate)
    if matches:
        newest = max(matches, key=lambda p: p.stat().st_mtime)
        return newest, "data.raw, matched by inputs and options in data.cache_dir"
    return None, f"no prepared dataset for data.raw found in {cache_dir}"


def find_evals(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable ``eval.json`` under ``run_dir`` (``restlit eval -o RUN/eval/...``)."""
    out = []
    for path in sorted(run_dir.rglob("eval.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("summary"), dict):
            out.append((path, payload))
    return out


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


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


def regions_without_tokens(log: RunLog) -> set[str]:
    """Regions that had no completion tokens in any logged step (``tokens/<REGION>`` all 0; without
    that column, ``entropy/<REGION>`` all 0, which the curriculum logs for an empty region)."""
    if any(log.has(f"tokens/{r}") for r in REGIONS):
        return {r for r in REGIONS if all(v <= 0 for v in log.series(f"tokens/{r}")[1])}
    if any(log.has(f"entropy/{r}") for r in REGIONS):
        return {r for r in REGIONS if all(v == 0 for v in log.series(f"entropy/{r}")[1])}
    return set()


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


def curriculum_priors(
    log: RunLog, cfg: Any, raw: dict[str, Any] | None
) -> tuple[str, list[int], dict[str, list[float]]]:
    """``(mode, steps, prior per region)``: what the curriculum asked of each region at each
    step. ``entropy`` mode: :func:`restlit.objective.region_priors` at the progress the step used
    (``curriculum/progress_used``, or the previous step's ``curriculum/progress``); ``static``:
    the released code's per-step constants; ``uniform``: no priors (empty)."""
    weights = getattr(getattr(cfg, "objective", None), "weights", None)
    if weights is None:
        from restlit.objective import WeightConfig

        try:
            weights = WeightConfig(**(_get(raw, "objective.weights", {}) or {}))
        except (TypeError, ValueError):
            return "unknown", [], {}
    mode = weights.mode
    if mode == "uniform":
        return mode, [], {}
    import torch  # noqa: F401 - restlit.objective needs it; imported here to keep the module light

    from restlit.objective import region_priors, static_region_weights

    steps: list[int] = []
    values: dict[str, list[float]] = {r: [] for r in REGIONS}
    previous = 0.0
    for s in log.steps:
        row = log.rows[s]
        if mode == "static":
            prior = static_region_weights(s)
        else:
            nu = row.get("curriculum/progress_used", previous)
            if "curriculum/progress" not in row and "curriculum/progress_used" not in row:
                continue
            prior = region_priors(min(1.0, max(0.0, nu)), weights)
        previous = row.get("curriculum/progress", previous)
        steps.append(s)
        for r in Region:
            values[r.name].append(float(prior[int(r)]))
    return mode, steps, values


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

    try:
        mode, steps, priors = curriculum_priors(log, cfg, raw)
        error = None
    except Exception as exc:  # noqa: BLE001 - one panel must not sink the report
        mode, steps, priors, error = "unknown", [], {}, str(exc)
    titles = {
        "entropy": "Curriculum: region priors at the step's training progress ν (weights.mode: entropy)",
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
    elif error:
        _no_data(ax2, f"priors unavailable: {error}")
    else:
        _no_data(ax2, "no data: needs the run's config.yaml and curriculum/progress")

    ax3.set_title("Curriculum progress ν")
    ax3.set_ylabel("ν")
    xs, ys = log.series("curriculum/progress")
    if xs:
        _line(ax3, xs, ys, color="#000000", label="ν", lw=2, smooth=False)
        ax3.set_ylim(-0.03, 1.05)
        by = _get(raw, "objective.curriculum.by")
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
            ax3.set_title(f"Wall time per step{smoothed} (total {_duration(total)}: {share})")
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


def is_sft_log(log: RunLog) -> bool:
    return log.has("sft/loss") and not log.has("reward/total")


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


# ------------------------------------------------------------------------------------------------
# report.md
# ------------------------------------------------------------------------------------------------

HEADINGS = {
    "rewards": "Rewards",
    "entropy": "Entropy per region",
    "weights": "Token weights and the curriculum",
    "throughput": "Completion length and throughput",
    "training": "Optimisation",
    "sft": "Supervised warm start",
}
CAPTIONS = {
    "rewards": "Reward components per training step: the mean over the step's completions (band: ±1 std), "
    "validation points (greedy decoding on held-out prompts) where validation ran. Grey bands "
    "mark steps that did not update the policy.",
    "entropy": "Top: the running mean entropy of each region's tokens, the statistics the entropy-informed "
    "weights use; the dotted black line is the structured regions' entropy that drives "
    "`curriculum.by: entropy`. Bottom: each region's share of the completion tokens.",
    "weights": "Top: the mean weight each region's tokens received in the policy gradient (1 = plain GRPO). "
    "Middle: the curriculum's region priors at the step's training progress ν (`entropy` mode; the "
    "released code's per-step constants in `static` mode). Bottom: ν itself.",
    "throughput": "Mean completion length with the fraction of completions cut at `max_new_tokens`, "
    "completion tokens per second, and each step's wall time split into rollout, scoring and "
    "the policy update.",
    "training": "Optimisation diagnostics (logged only on steps that updated the policy).",
    "sft": "The supervised warm start's loss per step.",
}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3e}"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.4g}"


def final_metrics(
    log: RunLog, last_n: int = DEFAULT_LAST_N
) -> list[tuple[str, str, float, int, float | None, int]]:
    """``(key, label, last value, its step, mean over the last ``last_n`` steps, values in that
    mean)`` for each summary metric present in the log."""
    window = log.steps[-last_n:]
    out = []
    for key, label in SUMMARY_KEYS:
        xs, ys = log.series(key)
        if not xs or (key == "curriculum/structured_entropy" and not any(ys)):  # 0: no structured tokens
            continue
        _, wy = log.series(key, window)
        mean = sum(wy) / len(wy) if wy else None
        out.append((key, label, ys[-1], xs[-1], mean, len(wy)))
    return out


def region_metrics(log: RunLog, last_n: int = DEFAULT_LAST_N) -> list[tuple[str, dict[str, float | None]]]:
    """Per region, the mean over the last ``last_n`` steps of its entropy, weight and token share,
    counting only steps where the region had tokens; regions without tokens are left out."""
    window = log.steps[-last_n:]
    empty = regions_without_tokens(log)
    out = []
    for region in REGIONS:
        if region in empty:
            continue
        values: dict[str, float | None] = {}
        for what in ("entropy", "weight", "tokens"):
            ys = []
            for s in window:
                row = log.rows[s]
                share = row.get(f"tokens/{region}")
                key = f"{what}/{region}"
                if key in row and (share is None or share > 0 or what == "tokens"):
                    ys.append(row[key])
            values[what] = sum(ys) / len(ys) if ys else None
        if any(v is not None for v in values.values()):
            out.append((region, values))
    return out


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


COUNT_COLUMNS = (
    ("records_read", "records read"),
    ("records_rejected", "records rejected"),
    ("records_with_samples", "records with samples"),
    ("records_without_samples", "records without samples"),
    ("turns", "turns"),
    ("samples_written", "samples written"),
    ("turns_rejected", "turns rejected"),
    ("coerced", "coerced"),
)


def _data_section(manifest_path: Path | None, how: str) -> list[str]:
    lines = ["## Data", ""]
    if manifest_path is None:
        return lines + [f"No `manifest.json` found: {how}.", ""]
    try:
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return lines + [f"`{manifest_path}` could not be read: {exc}.", ""]
    lines += [f"From `{manifest_path}` ({how}).", ""]
    sources = m.get("sources") or {}
    totals = m.get("totals") or {}
    rows = [[f"`{src}`", *[counts.get(k, "–") for k, _ in COUNT_COLUMNS]] for src, counts in sources.items()]
    rows.append(["**total**", *[f"**{totals.get(k, '–')}**" for k, _ in COUNT_COLUMNS]])
    lines += _md_table(["source", *[label for _, label in COUNT_COLUMNS]], rows) + [""]
    splits = m.get("splits") or {}
    if splits:
        lines += ["Samples per split: " + ", ".join(f"{k} **{v}**" for k, v in splits.items()) + ".", ""]
    rejected = totals.get("rejected") or {}
    if rejected:
        by_source = {src: (c.get("rejected") or {}) for src, c in sources.items()}
        header = ["rejection reason", *(f"`{s}`" for s in by_source), "total"]
        rrows = [
            [f"`{reason}`", *(by_source[s].get(reason, 0) for s in by_source), n]
            for reason, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        lines += ["Rejected records and turns, per reason:", ""] + _md_table(header, rrows) + [""]
    else:
        lines += ["Nothing was rejected.", ""]
    warnings = totals.get("warnings") or {}
    if warnings:
        lines += ["Warnings: " + ", ".join(f"`{k}` {v}" for k, v in sorted(warnings.items())) + ".", ""]
    inputs = m.get("inputs") or []
    if inputs:
        lines += ["Inputs:", ""]
        for i in inputs:
            sha = str(i.get("sha256", ""))[:12]
            lines.append(
                f"- `{i.get('path')}` ({i.get('format')}, {i.get('bytes', '?')} bytes, sha256 {sha}…)"
            )
        lines.append("")
    opts = m.get("options") or {}
    if opts:
        lines += ["Options: " + ", ".join(f"{k}={v}" for k, v in opts.items()) + ".", ""]
    return lines


def _eval_section(run_dir: Path, evals: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    if not evals:
        return []
    lines = ["## Evaluation", ""]
    for path, payload in evals:
        cfg = payload.get("config") or {}
        what = cfg.get("model") or (
            f"predictions `{cfg.get('predictions')}`" if cfg.get("predictions") else "?"
        )
        lines += [
            f"### `{path.relative_to(run_dir)}`",
            "",
            f"Model: `{what}`; suites: " + ", ".join(f"`{s}`" for s in cfg.get("suites") or []) + ".",
            "",
        ]
        summary = payload["summary"]
        rows = []
        for suite, s in summary.items():
            if not isinstance(s, dict):
                continue
            acc = s.get("accuracy")
            label = "**overall**" if suite == "overall" else f"`{suite}`"
            rows.append(
                [label, s.get("items", "–"), s.get("passed", "–"), "–" if acc is None else f"{100 * acc:.2f}"]
            )
        lines += _md_table(["suite", "items", "passed", "accuracy %"], rows) + [""]
        overall = summary.get("overall") or {}
        if overall.get("macro_accuracy") is not None and len(summary) > 2:
            lines += [f"Macro average over suites: {100 * overall['macro_accuracy']:.2f} %.", ""]
        held = summary.get("heldout")
        if isinstance(held, dict):
            keys = [
                k
                for k in (
                    "exact_match",
                    "tool_name_accuracy",
                    "param_precision",
                    "param_recall",
                    "param_f1",
                    "format_validity",
                    "no_call_accuracy",
                )
                if k in held
            ]
            if keys:
                hrows = [
                    [k.replace("_", " "), "–" if held[k] is None else f"{100 * held[k]:.2f}"] for k in keys
                ]
                lines += ["Held-out metrics:", ""] + _md_table(["metric", "%"], hrows) + [""]
        if payload.get("missing"):
            lines += [f"{payload['missing']} items had no prediction (scored as failed).", ""]
    return lines


def _overview(log: RunLog, run_dir: Path, cfg: Any, raw: dict[str, Any] | None) -> list[str]:
    from restlit import __version__

    steps = log.steps
    skipped = log.skipped_steps()
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    lines = [f"- Run directory: `{run_dir.resolve()}`", f"- Generated: {now} by restlit {__version__}"]
    kind = "SFT" if is_sft_log(log) else "ResT (fit)"
    lines.append(f"- Run kind: {kind}; steps logged: **{len(steps)}** ({steps[0]}–{steps[-1]})")
    max_steps = _get(raw, "trainer.max_steps") if not is_sft_log(log) else None
    if max_steps:
        lines[-1] += f" of `trainer.max_steps` {max_steps}"
    if not is_sft_log(log):
        reasons = log.skip_reasons()
        text = f"- Skipped steps (no policy update): **{len(skipped)}**"
        if reasons:
            text += " (" + ", ".join(f"`{k}` {v}" for k, v in reasons.items()) + ")"
        lines.append(text)
        val_points = len(log.series("val/total")[0])
        if val_points:
            lines.append(f"- Validation points: {val_points}")
        model = _get(raw, "model.path")
        if model:
            init = _get(raw, "model.init")
            lines.append(f"- Model: `{model}`" + (f" ({init} init)" if init else ""))
        mode = _get(raw, "objective.weights.mode")
        if mode:
            by = _get(raw, "objective.curriculum.by")
            lines.append(f"- Token weights: `{mode}`; curriculum by `{by}`")
        seconds = sum(sum(log.series(f"time/{k}")[1]) for k in TIME_COLORS)
        if seconds:
            lines.append(
                f"- Logged step time: {_duration(seconds)} ({seconds / max(len(steps), 1):.2f} s per step)"
            )
    return lines


def write_markdown(
    path: Path,
    *,
    run_dir: Path,
    log: RunLog,
    figures: dict[str, Path],
    cfg: Any,
    raw: dict[str, Any] | None,
    config_text: str | None,
    manifest: tuple[Path | None, str],
    evals: list[tuple[Path, dict[str, Any]]],
    last_n: int = DEFAULT_LAST_N,
    sft_log: RunLog | None = None,
) -> Path:
    name = run_dir.resolve().name
    lines = [f"# restlit report: {name}", ""]
    lines += _overview(log, run_dir, cfg, raw) + [""]

    lines += ["## Final metrics", ""]
    rows = final_metrics(log, last_n)
    window = log.steps[-last_n:]
    lines += [
        (
            f"Last logged value (and its step) and the mean over the last {len(window)} logged steps "
            f"({window[0]}–{window[-1]}; *n* = values in that window)."
        ),
        "",
    ]
    table = [[label, _fmt(last), at, _fmt(mean), n] for _key, label, last, at, mean, n in rows]
    lines += _md_table(["metric", "last", "step", f"mean of last {len(window)}", "n"], table) + [""]
    regions = region_metrics(log, last_n)
    if regions:
        lines += [
            f"Per region, mean over the same {len(window)} steps (steps where the region had tokens):",
            "",
        ]
        rrows = [[f"`{r}`", _fmt(v["entropy"]), _fmt(v["weight"]), _fmt(v["tokens"])] for r, v in regions]
        lines += _md_table(["region", "entropy (nats)", "mean weight", "token share"], rrows) + [""]
        empty = sorted(regions_without_tokens(log), key=REGIONS.index)
        if empty:
            lines += ["No tokens in any step: " + ", ".join(f"`{r}`" for r in empty) + ".", ""]
    if sft_log is not None and sft_log.has("sft/loss"):
        _, ys = sft_log.series("sft/loss")
        lines += [
            f"SFT warm start (`sft/`): {len(sft_log.steps)} steps, loss {_fmt(ys[0])} → {_fmt(ys[-1])}.",
            "",
        ]

    lines += _eval_section(run_dir, evals)

    lines += ["## Figures", ""]
    for fig_name, fig_path in figures.items():
        rel = Path(fig_path).name if Path(fig_path).parent == path.parent else Path(fig_path).as_posix()
        lines += [
            f"### {HEADINGS.get(fig_name, fig_name)}",
            "",
            CAPTIONS.get(fig_name, ""),
            "",
            f"![{fig_name}]({rel})",
            "",
        ]

    lines += _data_section(*manifest)

    lines += ["## Resolved config", ""]
    if config_text is None:
        lines += ["No `config.yaml` in the run directory.", ""]
    else:
        lines += [
            f"`{(run_dir / 'config.yaml').resolve()}`:",
            "",
            "```yaml",
            config_text.rstrip("\n"),
            "```",
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)


def build_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, last_n: int = DEFAULT_LAST_N
) -> Report:
    """Figures and ``report.md`` for ``run_dir`` in ``out_dir`` (default ``run_dir/report``).
    ReportError when ``run_dir`` is not a directory or holds no readable ``metrics.csv``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory (give the run's output_dir)")
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        hint = ""
        if (run_dir / "sft" / "metrics.csv").is_file():
            hint = f"; the SFT run's logs are in {run_dir / 'sft'}"
        raise ReportError(
            f"{metrics}: no such file (not a `restlit fit`/`sft` run directory, or no step logged yet){hint}"
        )
    if last_n < 1:
        raise ReportError(f"--last must be >= 1, got {last_n}")
    log = read_metrics(metrics)
    sft_log = None
    if (run_dir / "sft" / "metrics.csv").is_file():
        try:
            sft_log = read_metrics(run_dir / "sft" / "metrics.csv")
        except ReportError:
            sft_log = None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("restlit report needs matplotlib: pip install matplotlib") from None
    cfg, raw, text = load_run_config(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    name = run_dir.resolve().name
    try:
        figures = make_figures(log, out, name=name, cfg=cfg, raw=raw, sft_log=sft_log)
        md = write_markdown(
            out / "report.md",
            run_dir=run_dir,
            log=log,
            figures=figures,
            cfg=cfg,
            raw=raw,
            config_text=text,
            manifest=find_manifest(cfg, raw),
            evals=find_evals(run_dir),
            last_n=last_n,
            sft_log=sft_log,
        )
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return Report(md, figures)
