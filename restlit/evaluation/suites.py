"""The suite registry of ``restlit eval``: suite names, :func:`parse_suites` (expanding ``--suite``
values) and :func:`load_suite` (a named suite's items, prompts and scorer, :class:`Suite`).

Suites are named ``heldout`` (the validation split of a prepared dataset), ``bfcl:<category>``
(BFCL's single-turn AST categories and its four executed multi-turn ones) and
``apibank:<level>``; :func:`parse_suites` expands ``bfcl:simple_python,multiple``,
``bfcl:multi_turn``, ``bfcl:all`` and ``apibank``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restlit.errors import UserError
from restlit.evaluation import apibank, bfcl, heldout, multiturn
from restlit.formats import Format, get_format

__all__ = ["BFCL_ALL", "HELDOUT", "MULTI_TURN", "EvalError", "Suite", "load_suite", "parse_suites"]

HELDOUT = "heldout"
MULTI_TURN = "multi_turn"
BFCL_ALL = (*bfcl.CATEGORIES, *multiturn.CATEGORIES)


class EvalError(UserError):
    """A user mistake (unknown suite, missing file, bad predictions line); one line."""


@dataclass
class Suite:
    """One scored category: its items' ids, how to prompt and how to score them.

    ``messages(i)`` are item ``i``'s chat messages (single-turn suites); ``steps(i)`` is entry
    ``i``'s inference loop (multi-turn suites, ``multi_turn`` True;
    :func:`restlit.evaluation.multiturn.entry_steps`); ``score(i, output)``
    returns the per-item record ``{"passed", "reason", ...}``; ``metrics()`` the suite's extra
    metrics over the items scored so far.
    """

    name: str
    ids: list[str]
    messages: Callable[[int], list[dict[str, str]]] | None
    score: Callable[[int, Any], dict[str, Any]]
    metrics: Callable[[], dict[str, Any]] = field(default=dict)
    steps: Callable[[int], Generator] | None = None

    @property
    def multi_turn(self) -> bool:
        return self.steps is not None


def _expand(part: str, family: str) -> tuple[list[str], str]:
    """The suite names of one ``--suite`` element, and the family (``bfcl`` / ``apibank``) that
    bare names after it in the same value belong to."""
    if part == HELDOUT:
        return [HELDOUT], family
    if part == "apibank":
        return [f"apibank:{lv}" for lv in apibank.LEVELS], "apibank"
    prefix, colon, name = part.partition(":")
    if not colon:
        prefix, name = family, part
    if prefix == "apibank" and name in apibank.LEVELS:
        return [f"apibank:{name}"], prefix
    if prefix == "bfcl":
        if name == "all" and colon:
            return [f"bfcl:{c}" for c in BFCL_ALL], prefix
        if name == MULTI_TURN:
            return [f"bfcl:{c}" for c in multiturn.CATEGORIES], prefix
        if name in BFCL_ALL:
            return [f"bfcl:{name}"], prefix
    raise EvalError(f"unknown suite {part!r}: expected heldout, bfcl:all, bfcl:multi_turn, bfcl:<category> "
                    f"with a category among {', '.join(BFCL_ALL)}, or apibank[:level-1,level-2,level-3]")


def parse_suites(specs: Sequence[str]) -> list[str]:
    """Expand ``--suite`` values into suite names, in order, without duplicates.

    Each value is a comma-separated list of ``heldout``, ``bfcl:<category>`` (the prefix may be
    left out after the first: ``bfcl:simple_python,multiple``), ``bfcl:multi_turn`` (the four
    multi-turn categories), ``bfcl:all`` (every category), ``apibank`` (the three levels) and
    ``apibank:level-1,level-2``. EvalError for an unknown name or an empty list.
    """
    out: list[str] = []
    for spec in specs:
        family = "bfcl"
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            names, family = _expand(part, family)
            out.extend(n for n in names if n not in out)
    if not out:
        raise EvalError("no suite given: use --suite heldout, bfcl:<category> and/or apibank")
    return out


def _bfcl_suite(category: str, limit: int | None, fmt: Format) -> Suite:
    items = bfcl.load_category(category, limit)

    def score(i: int, output: str) -> dict[str, Any]:
        v = bfcl.score_output(items[i], output, fmt)
        return {"passed": v.passed, "reason": v.reason}

    return Suite(f"bfcl:{category}", [it.id for it in items], lambda i: bfcl.item_messages(items[i], fmt), score)


def _multi_turn_suite(category: str, limit: int | None, fmt: Format) -> Suite:
    entries = multiturn.load_category(category, limit)

    def score(i: int, output: Any) -> dict[str, Any]:
        if not isinstance(output, dict) or "turns" not in output:
            return {"passed": False, "reason": "expected the steps of each turn ('turns'), got one output text",
                    "failed_turn": None, "stop": None, "trajectory": []}
        result = multiturn.score_trajectory(entries[i], output["turns"], output.get("stop"), fmt)
        return {"passed": result["passed"], "reason": result["reason"], "failed_turn": result["failed_turn"],
                "stop": output.get("stop"), "trajectory": result["trajectory"]}

    return Suite(f"bfcl:{category}", [e.id for e in entries], None, score,
                 steps=lambda i: multiturn.entry_steps(entries[i], fmt=fmt))


def _apibank_suite(level: str, limit: int | None, prompt: str, fmt: Format) -> Suite:
    items = apibank.load_level(level, limit)

    def score(i: int, output: str) -> dict[str, Any]:
        v = apibank.score_output(items[i], output, fmt)
        return {"passed": v.passed, "reason": v.reason}

    return Suite(f"apibank:{level}", [it.id for it in items], lambda i: apibank.messages(items[i], prompt, fmt),
                 score)


def _heldout_suite(data: str | Path | None, limit: int | None, fmt: Format) -> Suite:
    if data is None:
        raise EvalError("the heldout suite needs --data DIR (a `restlit prepare` output)")
    try:
        samples = heldout.load_heldout(data, limit)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    # the scores of the items that had an output, for the suite metrics
    scores: dict[int, heldout.HeldoutScore] = {}

    def score(i: int, output: str) -> dict[str, Any]:
        s = heldout.score_output(samples[i].target, output, fmt)
        scores[i] = s
        return {"passed": s.verdict.passed, "reason": s.verdict.reason, "format_valid": s.format_valid,
                "names_ok": s.names_ok, "param_tp": s.param_tp, "param_pred": s.param_pred,
                "param_gold": s.param_gold}

    def metrics() -> dict[str, Any]:
        out = heldout.summarize([scores[i] for i in sorted(scores)])
        out.pop("items")
        return out

    return Suite(HELDOUT, [s.id for s in samples], lambda i: fmt.messages(samples[i].tools, samples[i].history),
                 score, metrics)


def load_suite(name: str, *, data: str | Path | None = None, limit: int | None = None,
               prompt: str = "native", fmt: Format | str | None = None) -> Suite:
    """Load one suite by name (see :func:`parse_suites`), its first ``limit`` items; ``prompt``
    (``native`` or ``restlit``) is the system prompt of the API-Bank suites; ``fmt`` the output
    format prompted and parsed in (default ToolRL's, :mod:`restlit.formats`).

    EvalError for user mistakes: heldout without a usable ``data`` directory, bfcl-eval missing
    (the message gives the install command), an unknown prompt.
    """
    fmt = get_format(fmt)
    if name == HELDOUT:
        return _heldout_suite(data, limit, fmt)
    family, _, category = name.partition(":")
    if prompt not in apibank.PROMPTS:
        raise EvalError(f"unknown prompt {prompt!r}: expected one of {', '.join(apibank.PROMPTS)}")
    try:
        if family == "apibank":
            return _apibank_suite(category, limit, prompt, fmt)
        if category in multiturn.CATEGORIES:
            return _multi_turn_suite(category, limit, fmt)
        return _bfcl_suite(category, limit, fmt)
    except (bfcl.BFCLUnavailable, ValueError) as exc:
        raise EvalError(str(exc)) from None
