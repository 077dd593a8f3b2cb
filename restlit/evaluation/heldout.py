"""The ``heldout`` suite: the validation split of a prepared dataset (``restlit prepare``), scored
against the reference calls exactly (no BFCL string normalisation: the references are concrete).

Per item: exact call-list match (order-free), tool names, parameter triples for precision and
recall, format validity, and for items whose reference has no call, whether none was made.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.evaluation.ast_checker import Verdict
from restlit.formats import Format, get_format

__all__ = ["HeldoutScore", "load_heldout", "score_output", "summarize"]

@dataclass(frozen=True)
class HeldoutScore:
    """The scores of one output. ``verdict.passed`` is the exact call-list match; ``names_ok``
    is True when the multiset of tool names equals the reference's; ``param_*`` count
    ``(tool, parameter, value)`` triples (true positives, predicted, reference)."""

    verdict: Verdict
    expects_call: bool
    made_call: bool
    names_ok: bool
    param_tp: int
    param_pred: int
    param_gold: int
    format_valid: bool


def load_heldout(directory: str | Path, limit: int | None = None) -> list[Any]:
    """The validation samples (``restlit.data_prep.samples.Sample``) of a prepared dataset, in order.

    ValueError (one line) when ``directory`` is not a prepared dataset or has no validation split,
    or an empty one (a score over no item is no score).
    """
    from restlit.data_prep.samples import read_split

    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory (expected the output of `restlit prepare`)")
    if not (path / "manifest.json").is_file():
        raise ValueError(f"{path}: not a prepared dataset (no manifest.json)")
    samples = read_split(path, "validation", limit)
    if samples is None:
        raise ValueError(f"{path}: the prepared dataset has no validation split")
    if not samples:
        raise ValueError(f"{path}: the validation split has no item to score "
                         f"(prepare with --val-fraction > 0, or with more records)")
    return samples


def _canonical(value: Any) -> Any:
    """Values equal as JSON compare equal here: tuples are lists, ``2.0`` is ``2``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _key(value: Any) -> str:
    return json.dumps(_canonical(value), sort_keys=True, ensure_ascii=False, default=repr)


def _call_key(call: Mapping[str, Any]) -> str:
    return _key([call["name"], call["arguments"]])


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _argument_diff(pred: Mapping[str, Any], gold: Mapping[str, Any]) -> str:
    for param in gold:
        if param not in pred:
            return f"missing parameter {param!r}"
    for param in pred:
        if param not in gold:
            return f"unexpected parameter {param!r}"
    for param, value in gold.items():
        if _key(pred[param]) != _key(value):
            return f"parameter {param!r}: got {_short(pred[param])}, expected {_short(value)}"
    return "arguments match"


def _mismatch(pred: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> str:
    """Why two call lists differ (they are known to differ)."""
    if len(pred) != len(gold):
        return f"expected {len(gold)} call{'s' * (len(gold) != 1)}, got {len(pred)}"
    pred_names, gold_names = sorted(c["name"] for c in pred), sorted(c["name"] for c in gold)
    if pred_names != gold_names:
        return f"wrong tool names: expected {gold_names}, got {pred_names}"
    unmatched = Counter(_call_key(c) for c in pred)
    missing = []
    for g in gold:
        k = _call_key(g)
        if unmatched[k]:
            unmatched[k] -= 1
        else:
            missing.append(g)
    g = missing[0]
    # explain against the first same-named predicted call that no reference call claimed
    candidate = next(p for p in pred if p["name"] == g["name"] and unmatched[_call_key(p)])
    return f"call {g['name']!r}: {_argument_diff(candidate['arguments'], g['arguments'])}"


def _triples(calls: Sequence[Mapping[str, Any]]) -> Counter:
    return Counter((c["name"], p, _key(v)) for c in calls for p, v in c["arguments"].items())


def score_output(target: Mapping[str, Any], output: str, fmt: Format | str | None = None) -> HeldoutScore:
    """Score ``output`` against a sample's target ``{"think", "calls", "response"}``.

    Calls are read with :func:`restlit.toolcalls.parse_tool_calls` (so a JSON list or Python-call
    output is scored on its content; :func:`restlit.rewards.format_ok` says whether it was canonical). The
    exact match is a multiset equality of ``(name, arguments)`` with JSON equality of values; a
    malformed call line fails it. Parameter triples count the calls that did parse. In another
    output format ``fmt`` the calls and the format validity are that format's.
    """
    fmt = get_format(fmt)
    gold = [{"name": c["name"], "arguments": c["arguments"]} for c in target.get("calls") or ()]
    pred, errors = fmt.read_calls(output)
    if not gold:
        if pred:
            names = ", ".join(repr(c["name"]) for c in pred)
            verdict = Verdict(False, f"expected no call, got {len(pred)} call{'s' * (len(pred) != 1)} ({names})")
        else:
            verdict = Verdict(True, "no call, as expected")
    elif errors:
        verdict = Verdict(False, f"malformed tool call: {errors[0]}")
    elif not pred:
        verdict = Verdict(False, "no tool call in the output")
    elif Counter(map(_call_key, pred)) == Counter(map(_call_key, gold)):
        verdict = Verdict(True, "exact match")
    else:
        verdict = Verdict(False, _mismatch(pred, gold))
    tp_triples = _triples(pred) & _triples(gold)
    return HeldoutScore(
        verdict=verdict,
        expects_call=bool(gold),
        made_call=bool(pred),
        names_ok=Counter(c["name"] for c in pred) == Counter(c["name"] for c in gold),
        param_tp=sum(tp_triples.values()),
        param_pred=sum(len(c["arguments"]) for c in pred),
        param_gold=sum(len(c["arguments"]) for c in gold),
        format_valid=fmt.format_ok(output),
    )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def summarize(scores: Sequence[HeldoutScore]) -> dict[str, float | int | None]:
    """Suite metrics (None where undefined, e.g. no-call accuracy without no-call items):

    ``exact_match`` over all items; ``tool_name_accuracy`` over items whose reference has calls;
    ``param_precision`` / ``param_recall`` / ``param_f1`` micro-averaged over triples;
    ``format_validity`` over all items; ``no_call_accuracy`` over items whose reference has none.
    """
    with_calls = [s for s in scores if s.expects_call]
    no_calls = [s for s in scores if not s.expects_call]
    tp = sum(s.param_tp for s in scores)
    precision = _ratio(tp, sum(s.param_pred for s in scores))
    recall = _ratio(tp, sum(s.param_gold for s in scores))
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "items": len(scores),
        "exact_match": _ratio(sum(s.verdict.passed for s in scores), len(scores)),
        "tool_name_accuracy": _ratio(sum(s.names_ok for s in with_calls), len(with_calls)),
        "param_precision": precision,
        "param_recall": recall,
        "param_f1": f1,
        "format_validity": _ratio(sum(s.format_valid for s in scores), len(scores)),
        "no_call_accuracy": _ratio(sum(not s.made_call for s in no_calls), len(no_calls)),
    }
