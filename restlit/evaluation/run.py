"""``restlit eval`` as a library: suites, outputs (saved predictions or greedy generation),
per-item verdicts, summaries and ``eval.json``.

Suites are named ``heldout`` (the validation split of a prepared dataset) and
``bfcl:<category>``; :func:`parse_suites` expands ``bfcl:simple_python,multiple`` and ``bfcl:all``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restlit.errors import UserError
from restlit.evaluation import bfcl, heldout

__all__ = [
    "EvalError",
    "Suite",
    "generate_outputs",
    "load_predictions",
    "load_suite",
    "parse_suites",
    "score",
    "write_report",
]

HELDOUT = "heldout"


class EvalError(UserError):
    """A user mistake (unknown suite, missing file, bad predictions line); one line."""


@dataclass
class Suite:
    """One scored category: its items' ids, how to prompt and how to score them.

    ``messages(i)`` are item ``i``'s chat messages; ``score(i, output)`` returns the per-item
    record ``{"passed", "reason", ...}``; ``metrics()`` the suite's extra metrics over the items
    scored so far.
    """

    name: str
    ids: list[str]
    messages: Callable[[int], list[dict[str, str]]]
    score: Callable[[int, str], dict[str, Any]]
    metrics: Callable[[], dict[str, Any]] = field(default=dict)


def parse_suites(specs: Sequence[str]) -> list[str]:
    """Expand ``--suite`` values into suite names, in order, without duplicates.

    Each value is a comma-separated list of ``heldout``, ``bfcl:<category>`` (the prefix may be
    left out after the first: ``bfcl:simple_python,multiple``) and ``bfcl:all`` (every
    category). EvalError for an unknown name or an empty list.
    """
    out: list[str] = []
    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            category = part.removeprefix("bfcl:")
            if part == HELDOUT:
                names = [HELDOUT]
            elif part == "bfcl:all":
                names = [f"bfcl:{c}" for c in bfcl.CATEGORIES]
            elif category in bfcl.CATEGORIES:
                names = [f"bfcl:{category}"]
            else:
                raise EvalError(f"unknown suite {part!r}: expected heldout, bfcl:all or bfcl:<category> "
                                f"with a category among {', '.join(bfcl.CATEGORIES)}")
            out.extend(n for n in names if n not in out)
    if not out:
        raise EvalError("no suite given: use --suite heldout and/or --suite bfcl:<category>")
    return out


def _bfcl_suite(category: str, limit: int | None) -> Suite:
    items = bfcl.load_category(category, limit)

    def score(i: int, output: str) -> dict[str, Any]:
        v = bfcl.score_output(items[i], output)
        return {"passed": v.passed, "reason": v.reason}

    return Suite(f"bfcl:{category}", [it.id for it in items], lambda i: bfcl.item_messages(items[i]), score)


def _heldout_suite(data: str | Path | None, limit: int | None) -> Suite:
    if data is None:
        raise EvalError("the heldout suite needs --data DIR (a `restlit prepare` output)")
    try:
        samples = heldout.load_heldout(data, limit)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    # the scores of the items that had an output, for the suite metrics
    scores: dict[int, heldout.HeldoutScore] = {}

    def score(i: int, output: str) -> dict[str, Any]:
        s = heldout.score_output(samples[i].target, output)
        scores[i] = s
        return {"passed": s.verdict.passed, "reason": s.verdict.reason, "format_valid": s.format_valid,
                "names_ok": s.names_ok, "param_tp": s.param_tp, "param_pred": s.param_pred,
                "param_gold": s.param_gold}

    def metrics() -> dict[str, Any]:
        out = heldout.summarize([scores[i] for i in sorted(scores)])
        out.pop("items")
        return out

    return Suite(HELDOUT, [s.id for s in samples], lambda i: samples[i].messages(), score, metrics)


def load_suite(name: str, *, data: str | Path | None = None, limit: int | None = None) -> Suite:
    """Load one suite by name (see :func:`parse_suites`), its first ``limit`` items.

    EvalError for user mistakes: heldout without a usable ``data`` directory, bfcl-eval missing
    (the message gives the install command).
    """
    if name == HELDOUT:
        return _heldout_suite(data, limit)
    try:
        return _bfcl_suite(name.split(":", 1)[1], limit)
    except (bfcl.BFCLUnavailable, ValueError) as exc:
        raise EvalError(str(exc)) from None


def load_predictions(path: str | Path) -> dict[str, str]:
    """Saved outputs: a JSON-lines file of ``{"id": str, "output": str}``; the last line wins for a
    repeated id. EvalError naming the file and line for anything else."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read: {exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("output"), str)):
            raise EvalError(f"{path}:{n}: expected an object with string fields 'id' and 'output'")
        out[row["id"]] = row["output"]
    return out


def generate_outputs(
    conversations: Sequence[list[dict[str, str]]],
    model: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy completions of ``conversations`` (chat messages) by ``model`` (a directory or the
    alias ``smollm2-135m``), through :class:`restlit.rollout.hf.HFEngine`.

    Prompts are rendered with the tokenizer's chat template and generated ``batch_size`` at a
    time, shortest first (less padding); the outputs come back in input order. ``progress(done,
    total)`` is called after each batch. EvalError when the model cannot be found.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from restlit.models import ModelNotFound, load_policy, load_tokenizer
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine
    from restlit.tokens import prompt_ids

    # transformers' own "Loading weights" bar would interleave with the caller's progress bar
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = load_tokenizer(model)
        policy = load_policy(model)
    except ModelNotFound as exc:
        raise EvalError(str(exc)) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    engine = HFEngine(policy, tokenizer, prompt_batch_size=batch_size)
    sampling = SamplingConfig(n=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    prompts = [prompt_ids(tokenizer, m) for m in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        groups = engine.generate([prompts[i] for i in chunk], sampling)
        for i, group in zip(chunk, groups):
            outputs[i] = group[0].text
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return outputs


def score(suites: Sequence[Suite], outputs: dict[str, str]) -> dict[str, Any]:
    """Score every item of ``suites`` with ``outputs`` (id -> text).

    An item without an output fails with reason "no prediction for this id". Returns
    ``{"summary": {suite: {"items", "passed", "accuracy", ...metrics}, "overall": {...}},
    "items": [{"suite", "id", "passed", "reason", "output", ...}], "missing": count}``;
    ``overall`` has the micro ``accuracy`` over all items and the ``macro_accuracy`` over suites.
    A suite's extra metrics (heldout's) cover the items that had an output.
    """
    summary: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    missing = 0
    for suite in suites:
        records = []
        for i, item_id in enumerate(suite.ids):
            if item_id in outputs:
                rec = {"suite": suite.name, "id": item_id, **suite.score(i, outputs[item_id]),
                       "output": outputs[item_id]}
            else:
                missing += 1
                rec = {"suite": suite.name, "id": item_id, "passed": False,
                       "reason": "no prediction for this id", "output": None}
            records.append(rec)
        passed = sum(r["passed"] for r in records)
        summary[suite.name] = {"items": len(records), "passed": passed,
                               "accuracy": passed / len(records) if records else None,
                               **suite.metrics()}
        items.extend(records)
    total = sum(s["items"] for s in summary.values())
    passed = sum(s["passed"] for s in summary.values())
    accuracies = [s["accuracy"] for s in summary.values() if s["accuracy"] is not None]
    summary["overall"] = {
        "items": total, "passed": passed, "accuracy": passed / total if total else None,
        "macro_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
    }
    return {"summary": summary, "items": items, "missing": missing}


def write_report(result: dict[str, Any], out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write ``out_dir/eval.json`` (``config``, ``summary``, per-item ``items``); return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    payload = {"config": config, "summary": result["summary"], "missing": result["missing"], "items": result["items"]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
