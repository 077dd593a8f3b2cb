"""``report.md``: the run's overview, final metrics and per-region table, evaluations found
under the run, the figures with captions (relative links), the data counts from the prepared
dataset's ``manifest.json`` and the resolved config."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from restlit.report.logs import (
    DEFAULT_LAST_N,
    REGIONS,
    TIME_PARTS,
    RunLog,
    config_value,
    duration,
    is_sft_log,
    regions_without_tokens,
)

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
    "Middle: the curriculum's region priors as training logged them (`curriculum/prior/<REGION>`: at the "
    "step's training progress ν in `entropy` mode; the released code's per-step constants in `static` mode). "
    "Bottom: ν itself.",
    "throughput": "Mean completion length with the fraction of completions cut at `max_new_tokens`, "
    "completion tokens per second, and each step's wall time split into rollout, scoring and "
    "the policy update.",
    "training": "Optimisation diagnostics (logged only on steps that updated the policy).",
    "sft": "The supervised warm start's loss per step.",
}



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
    max_steps = config_value(raw, "trainer.max_steps") if not is_sft_log(log) else None
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
        model = config_value(raw, "model.path")
        if model:
            init = config_value(raw, "model.init")
            lines.append(f"- Model: `{model}`" + (f" ({init} init)" if init else ""))
        mode = config_value(raw, "objective.weights.mode")
        if mode:
            by = config_value(raw, "objective.curriculum.by")
            lines.append(f"- Token weights: `{mode}`; curriculum by `{by}`")
        seconds = sum(sum(log.series(f"time/{k}")[1]) for k in TIME_PARTS)
        if seconds:
            lines.append(
                f"- Logged step time: {duration(seconds)} ({seconds / max(len(steps), 1):.2f} s per step)"
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
