"""Scoring of ``restlit eval``: per-item verdicts from the outputs, per-suite summaries with Wilson
intervals, and BFCL's leaderboard groups (:data:`GROUPS`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from restlit.evaluation import apibank, multiturn
from restlit.evaluation.suites import Suite
from restlit.stats import Interval, wilson_interval

__all__ = ["GROUPS", "groups", "score"]

# BFCL's leaderboard groups: (name, categories, how they are averaged); "overall" is the
# unweighted mean of the four groups (BFCL's own total also weighs in categories restlit has not)
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("non-live AST", ("simple_python", "multiple", "parallel", "parallel_multiple"), "mean"),
    ("live AST", ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"), "pooled"),
    ("multi-turn", multiturn.CATEGORIES, "mean"),
    ("irrelevance", ("irrelevance", "live_irrelevance"), "mean"),
)


def _interval(passed: int, items: int) -> dict[str, float | int]:
    return wilson_interval(passed, items).to_dict()


def groups(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """BFCL's leaderboard groups over the categories in ``summary`` (a group needs all of its
    categories), plus ``overall`` (the unweighted mean of the four groups, when all are there) and
    ``API-Bank`` (all items of the three levels, when all are there).

    Each is ``{"items", "accuracy", "interval", "of"}``. A pooled group's interval is the Wilson
    interval of its items; an unweighted mean's is the Wilson interval of that mean at the group's
    item count (an approximation, exact when the categories have equal sizes).
    """
    def pooled(name: str, members: Sequence[str]) -> dict[str, Any]:
        items = sum(summary[m]["items"] for m in members)
        passed = sum(summary[m]["passed"] for m in members)
        return {"items": items, "accuracy": passed / items if items else None, "interval": _interval(passed, items),
                "of": list(members)}

    def mean(members: Sequence[str], accuracies: Sequence[float], items: int) -> dict[str, Any]:
        value = sum(accuracies) / len(accuracies)
        w = wilson_interval(round(value * items), items)
        return {"items": items, "accuracy": value,
                "interval": Interval(value, min(w.low, value), max(w.high, value), items).to_dict(),
                "of": list(members)}

    out: dict[str, dict[str, Any]] = {}
    for name, categories, how in GROUPS:
        members = [f"bfcl:{c}" for c in categories]
        if not all(m in summary and summary[m]["items"] for m in members):
            continue
        if how == "pooled":
            out[name] = pooled(name, members)
        else:
            out[name] = mean(members, [summary[m]["accuracy"] for m in members],
                             sum(summary[m]["items"] for m in members))
    if len(out) == len(GROUPS):
        names = [g[0] for g in GROUPS]
        out["overall"] = mean(names, [out[n]["accuracy"] for n in names], sum(out[n]["items"] for n in names))
    levels = [f"apibank:{lv}" for lv in apibank.LEVELS]
    if all(m in summary and summary[m]["items"] for m in levels):
        out["API-Bank"] = pooled("API-Bank", levels)
    return out


def score(suites: Sequence[Suite], outputs: dict[str, Any]) -> dict[str, Any]:
    """Score every item of ``suites`` with ``outputs`` (id -> text, or ``{"turns", "stop"}`` for a
    multi-turn entry).

    An item without an output fails with reason "no prediction for this id". Returns
    ``{"summary": {suite: {"items", "passed", "accuracy", "interval", ...metrics}, "overall": {...}},
    "groups": {...}, "items": [{"suite", "id", "passed", "reason", "output" | "trajectory", ...}],
    "missing": count}``; ``overall`` has the micro ``accuracy`` over all items and the
    ``macro_accuracy`` over suites, ``groups`` BFCL's leaderboard groups (:func:`groups`); every
    ``interval`` is a 95% Wilson interval. A suite's extra metrics (heldout's) cover the items that
    had an output. A multi-turn record keeps the executed trajectory instead of the output.
    """
    summary: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    missing = 0
    for suite in suites:
        records = []
        for i, item_id in enumerate(suite.ids):
            if item_id in outputs and suite.multi_turn:
                rec = {"suite": suite.name, "id": item_id, **suite.score(i, outputs[item_id])}
            elif item_id in outputs:
                output = outputs[item_id]
                rec = ({"passed": False, "reason": "expected one output text, got the steps of turns"}
                       if not isinstance(output, str) else suite.score(i, output))
                rec = {"suite": suite.name, "id": item_id, **rec, "output": output}
            else:
                missing += 1
                rec = {"suite": suite.name, "id": item_id, "passed": False,
                       "reason": "no prediction for this id", "output": None}
            records.append(rec)
        passed = sum(r["passed"] for r in records)
        summary[suite.name] = {"items": len(records), "passed": passed,
                               "accuracy": passed / len(records) if records else None,
                               "interval": _interval(passed, len(records)), **suite.metrics()}
        items.extend(records)
    total = sum(s["items"] for s in summary.values())
    passed = sum(s["passed"] for s in summary.values())
    accuracies = [s["accuracy"] for s in summary.values() if s["accuracy"] is not None]
    leaderboard = groups(summary)
    summary["overall"] = {
        "items": total, "passed": passed, "accuracy": passed / total if total else None,
        "interval": _interval(passed, total),
        "macro_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
    }
    return {"summary": summary, "groups": leaderboard, "items": items, "missing": missing}
