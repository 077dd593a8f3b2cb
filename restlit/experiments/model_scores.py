"""Scoring a model on ``restlit eval`` suites, shared by ``restlit ablate`` and ``restlit demo``:
greedy generation and scoring with :mod:`restlit.evaluation.run` (:func:`evaluate`) and the
per-item scores of its result (:func:`item_scores`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["evaluate", "item_scores"]


def evaluate(model: str, suites: dict[str, int], data_dir: Path, out_dir: Path, *, max_new_tokens: int,
             console: Any = None, fmt: str | None = None) -> dict[str, Any]:
    """Greedy scoring of ``model`` on ``restlit eval`` suites (name -> number of items; ``heldout``
    reads the prepared ``data_dir``) with :mod:`restlit.evaluation.run`; writes ``out_dir/eval.json``
    and returns :func:`restlit.evaluation.run.score`'s result. Held-out records get
    ``expects_call`` (whether the reference has a call), which tool-name accuracy counts over.
    ``fmt``: the output format prompted and parsed in (default: the one recorded with ``model``,
    else ToolRL's)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from restlit.evaluation import heldout, run
    from restlit.formats import get_format
    from restlit.formats.record import recorded_format

    form = get_format(fmt or recorded_format(model))
    loaded = [run.load_suite(name, data=data_dir, limit=limit, fmt=form) for name, limit in suites.items()]
    ids = [i for s in loaded for i in s.ids]
    conversations = [s.messages(i) for s in loaded for i in range(len(s.ids))]
    console = console or Console(stderr=True)
    with Progress(TextColumn(f"generating ({Path(model).name or model})"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("gen", total=len(ids))
        texts = run.generate_outputs(conversations, model, batch_size=16, max_new_tokens=max_new_tokens,
                                     progress=lambda done, total: bar.update(task, completed=done))
    result = run.score(loaded, dict(zip(ids, texts)))
    if "heldout" in suites:
        expects = {s.id: bool(s.target.get("calls")) for s in heldout.load_heldout(data_dir, suites["heldout"])}
        for rec in result["items"]:
            if rec["suite"] == "heldout":
                rec["expects_call"] = expects[rec["id"]]
    run.write_report(result, out_dir, {"model": model, "suites": suites, "max_new_tokens": max_new_tokens,
                                       "format": form.name})
    return result


def item_scores(result: dict[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """Per suite, per metric, one score per item in item order: ``accuracy`` (passed, every suite);
    for ``heldout`` also ``exact_match`` (= passed), ``format_validity``, ``tool_name_accuracy``
    (None for items whose reference has no call) and ``param_tp`` / ``param_pred`` / ``param_gold``."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for rec in result["items"]:
        suite = out.setdefault(rec["suite"], {})
        suite.setdefault("accuracy", []).append(float(rec["passed"]))
        if rec["suite"] == "heldout" and "format_valid" in rec:
            suite.setdefault("exact_match", []).append(float(rec["passed"]))
            suite.setdefault("format_validity", []).append(float(rec["format_valid"]))
            suite.setdefault("tool_name_accuracy", []).append(
                float(rec["names_ok"]) if rec.get("expects_call", True) else None)
            for key in ("param_tp", "param_pred", "param_gold"):
                suite.setdefault(key, []).append(float(rec[key]))
    return out
