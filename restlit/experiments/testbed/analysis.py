"""The testbed's numbers from ``restlit ablate``'s and ``restlit diagnose variance``'s outputs (pure
reading and arithmetic; :mod:`restlit.stats` for every interval).

Per run (an arm's seed), from its held-out exact-match curve ``e(s)`` at the scored steps
``0 = s_0 < s_1 < ... < s_K = S`` (step 0: the shared SFT start):

- ``auc`` = the trapezoid area under ``e`` divided by ``S``: the mean exact match over training,
  ``sum_k (s_k - s_{k-1}) (e(s_k) + e(s_{k-1})) / 2 / S``, in [0, 1];
- ``steps_to_threshold`` = the first scored step with ``e(s) >= threshold`` (``threshold`` =
  the start's exact match + ``gain``), or ``S + (s_K - s_{K-1})`` when no scored step reaches it
  (censored: counted one scoring interval past the end).

Per arm: the mean of each over seeds with a Student-t 95% interval. Per pair of arms: the mean
paired difference over seeds (seed ``i`` of both arms saw the same prompts and sampling seeds) with
its t interval and the exact sign test (:func:`restlit.stats.paired_difference`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from restlit.stats import mean_interval, paired_difference


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _em(record: dict[str, Any]) -> float:
    return float(record["summary"]["heldout"]["exact_match"])


def curve_auc(steps: Sequence[int], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` over ``steps`` divided by the last step (module docstring)."""
    if len(steps) != len(values) or len(steps) < 2 or steps[-1] <= steps[0]:
        raise ValueError("an AUC needs at least two increasing steps")
    area = sum((steps[k] - steps[k - 1]) * (values[k] + values[k - 1]) / 2 for k in range(1, len(steps)))
    return area / (steps[-1] - steps[0])


def steps_to_threshold(steps: Sequence[int], values: Sequence[float], threshold: float) -> int:
    """The first step with ``value >= threshold``; one scoring interval past the end when none."""
    for s, v in zip(steps, values, strict=True):
        if v >= threshold:
            return s
    return steps[-1] + (steps[-1] - steps[-2])


def load_runs(ablation: Path) -> tuple[float, dict[str, dict[int, tuple[list[int], list[float]]]]]:
    """``(start exact match, arm -> seed -> (steps, exact match))`` from the finished runs of the
    per-seed ablations ``ablation/s<seed>/`` (:func:`restlit.experiments.testbed.driver.ablate`)."""
    e0 = None
    runs: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for sdir in sorted(ablation.glob("s*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1):
        if not sdir.name[1:].isdigit() or not (sdir / "plan.json").is_file():
            continue
        start = _lines(sdir / "start" / "evals.jsonl")
        if not start:
            continue
        e0 = _em(start[0]) if e0 is None else e0
        for arm in json.loads((sdir / "plan.json").read_text())["arms"]:
            path = sdir / arm / "seed0" / "result.json"
            if path.is_file():
                evals = json.loads(path.read_text())["evals"]
                steps = [0, *[int(e["step"]) for e in evals]]
                runs.setdefault(arm, {})[int(sdir.name[1:])] = (steps, [_em(start[0]), *[_em(e) for e in evals]])
    if e0 is None:
        raise ValueError(f"{ablation}: no finished ablation")
    return e0, runs


def analyse(ablation: Path, *, gain: float = 0.2, baseline: str = "grpo") -> dict[str, Any]:
    """AUC and steps-to-threshold per run, per arm (mean over seeds) and per pair (paired over seeds)."""
    e0, runs = load_runs(ablation)
    threshold = min(1.0, e0 + gain)
    per_run = {arm: {seed: {"auc": curve_auc(*c), "steps_to_threshold": steps_to_threshold(*c, threshold),
                            "final": c[1][-1]} for seed, c in seeds.items()} for arm, seeds in runs.items()}
    arms = {arm: {key: mean_interval([r[key] for r in rows.values()]).to_dict()
                  for key in ("auc", "steps_to_threshold", "final")} | {"seeds": len(rows)}
            for arm, rows in per_run.items()}
    names = list(per_run)
    if baseline in names:
        names.remove(baseline)
        names.insert(0, baseline)
    pairs: dict[str, Any] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            seeds = sorted(set(per_run[a]) & set(per_run[b]))
            if len(seeds) < 2:
                continue
            pairs[f"{b} - {a}"] = {key: paired_difference([per_run[b][s][key] for s in seeds],
                                                          [per_run[a][s][key] for s in seeds]).to_dict()
                                   for key in ("auc", "steps_to_threshold")}
    curves = {arm: {seed: {"steps": c[0], "exact_match": c[1]} for seed, c in seeds.items()}
              for arm, seeds in runs.items()}
    return {"start_exact_match": e0, "threshold": threshold, "runs": per_run, "arms": arms, "pairs": pairs,
            "curves": curves}


def variance_rows(directory: Path) -> list[dict[str, Any]]:
    """Per ``step<S>/variance.json`` under ``directory``: each weighting's variance ratio to uniform."""
    rows = []
    for path in sorted(directory.glob("step*/variance.json"), key=lambda p: int(p.parent.name[4:])):
        rep = json.loads(path.read_text())
        row: dict[str, Any] = {"step": int(path.parent.name[4:]), "batches": rep["batches"],
                               "batches_with_gradient": rep.get("batches_with_gradient"),
                               "mean_reward": rep["mean_reward"]}
        for name, w in rep["weightings"].items():
            ratio = w.get("ratio_to_uniform")
            row[name] = {"ratio": ratio, "ci": w["ratio_ci"], "relative_variance": w["relative_variance"]}
        rows.append(row)
    return rows


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"  # undefined (no gradient in any batch): "-"


def _iv(d: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    return f"{scale * d['value']:.{digits}f} [{scale * d['low']:.{digits}f}, {scale * d['high']:.{digits}f}]"


def markdown(think: int, result: dict[str, Any], variance: list[dict[str, Any]]) -> str:
    """The tables of one think length: arms, pairs, variance ratios."""
    lines = [(f"**L = {think}** (SFT start: held-out exact match {result['start_exact_match']:.3f}; "
              f"threshold {result['threshold']:.3f})"), "",
             ("| arm | seeds | AUC (mean EM over training) [95%] | steps to threshold [95%] | final EM [95%] |"),
             "|---|---|---|---|---|"]
    for arm, row in result["arms"].items():
        lines.append(f"| {arm} | {row['seeds']} | {_iv(row['auc'])} | {_iv(row['steps_to_threshold'], digits=1)} "
                     f"| {_iv(row['final'])} |")
    lines += ["", ("| pair (paired over seeds) | AUC difference [95%] | wins/losses, sign-test p "
                   "| steps-to-threshold difference [95%] |"), "|---|---|---|---|"]
    for pair, d in result["pairs"].items():
        a, s = d["auc"], d["steps_to_threshold"]
        lines.append(f"| {pair} | {_iv(a['difference'], digits=4)} | {a['wins']}/{a['losses']}, p = {a['p_value']:.3f} "
                     f"| {_iv(s['difference'], digits=1)} |")
    if variance:
        names = [k for k in variance[0] if isinstance(variance[0][k], dict) and k != "uniform"]
        lines += ["", "| grpo checkpoint step | batches (with gradient) | mean reward | "
                  + " | ".join(f"variance ratio {n}/uniform [95% bootstrap]" for n in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for row in variance:
            cells = [f"{_num(row[n]['ratio'])} [{_num(row[n]['ci'][0])}, {_num(row[n]['ci'][1])}]" for n in names]
            lines.append(f"| {row['step']} | {row['batches']} ({row['batches_with_gradient']}) | "
                         f"{row['mean_reward']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["analyse", "curve_auc", "load_runs", "markdown", "steps_to_threshold", "variance_rows"]
