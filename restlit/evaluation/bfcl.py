"""BFCL's single-turn AST categories: loading the data shipped in ``bfcl-eval``, rendering items
with restlit's prompt renderer, and scoring outputs with :mod:`restlit.evaluation.ast_checker`.

The data is read from the installed package's folder without importing it (its dependencies pin
old libraries and are not installed): ``pip install --no-deps bfcl-eval``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.evaluation.ast_checker import Verdict, check_calls, check_irrelevance
from restlit.formats import Format, get_format

__all__ = [
    "CATEGORIES",
    "INSTALL_HINT",
    "BFCLItem",
    "BFCLUnavailable",
    "data_dir",
    "item_messages",
    "load_category",
    "reference_output",
    "score_output",
]

CATEGORIES: tuple[str, ...] = (
    "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance",
)
INSTALL_HINT = "pip install --no-deps bfcl-eval"


class BFCLUnavailable(Exception):
    """``bfcl-eval`` is not installed or its data is incomplete; the message is one line."""


@dataclass
class BFCLItem:
    """One BFCL test item.

    ``messages``: the conversation (``[{"role", "content"}]``, roles system/user/assistant);
    ``functions``: the raw function docs (BFCL types); ``ground_truth``: one
    ``{name: {param: [possible values]}}`` per expected call, or None for irrelevance items.
    """

    id: str
    category: str
    messages: list[dict[str, str]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, dict[str, list]]] | None

    @property
    def irrelevance(self) -> bool:
        """True when the item passes only with no call."""
        return self.ground_truth is None


def data_dir() -> Path:
    """The ``data`` folder of the installed ``bfcl_eval`` package; BFCLUnavailable when absent."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BFCLUnavailable(f"BFCL suites need the bfcl-eval package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not path.is_dir():
        raise BFCLUnavailable(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def _read_lines(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_category(category: str, limit: int | None = None) -> list[BFCLItem]:
    """The items of one category in file order (the first ``limit`` when given).

    ValueError for an unknown category; BFCLUnavailable when the package or a file is missing.
    Irrelevance categories have no possible answers; every other item must have one.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; expected one of {', '.join(CATEGORIES)}")
    root = data_dir()
    questions = root / f"BFCL_v4_{category}.json"
    if not questions.is_file():
        raise BFCLUnavailable(f"{questions} is missing; reinstall with: {INSTALL_HINT}")
    rows = _read_lines(questions)
    if limit is not None:
        rows = rows[:limit]
    answers: dict[str, list] = {}
    if "irrelevance" not in category:
        answer_file = root / "possible_answer" / questions.name
        if not answer_file.is_file():
            raise BFCLUnavailable(f"{answer_file} is missing; reinstall with: {INSTALL_HINT}")
        answers = {a["id"]: a["ground_truth"] for a in _read_lines(answer_file)}
    items = []
    for row in rows:
        gt = None
        if "irrelevance" not in category:
            if row["id"] not in answers:
                raise BFCLUnavailable(f"{category}: item {row['id']} has no possible answer in the package data")
            gt = answers[row["id"]]
        # single-turn categories: the conversation is the first (only) turn
        items.append(BFCLItem(row["id"], category, row["question"][0], row["function"], gt))
    return items


def item_messages(item: BFCLItem, fmt: Format | str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one item, rendered by restlit's one prompt renderer.

    The functions are normalised to JSON Schema (``restlit.data_prep.schema``: ``dict`` -> ``object``,
    ``float`` -> ``number``, ...) as training tools are, and listed in restlit's system prompt with
    the canonical output format. A system message of the item itself (some live items have one)
    is appended to restlit's system prompt, since the renderer owns the system message. Another
    output format ``fmt`` renders the tools its way (:meth:`restlit.formats.Format.messages`).
    """
    from restlit.data_prep.schema import normalize_tools

    tools, _warnings = normalize_tools(item.functions)
    own_system = [m["content"] for m in item.messages if m["role"] == "system"]
    history = [m for m in item.messages if m["role"] != "system"]
    return get_format(fmt).messages(tools, history, system="\n\n".join(own_system) or None)


def score_output(item: BFCLItem, output: str, fmt: Format | str | None = None) -> Verdict:
    """Score one model output (any text) on ``item`` with BFCL's AST rules.

    The calls are read by :func:`restlit.toolcalls.parse_tool_calls` (canonical ``<tool_call>`` JSON
    lines, a JSON list, or Python-call syntax). Irrelevance items pass when no call parses (text
    that fails to parse counts as no call, as in BFCL). Other items fail on any malformed call,
    since BFCL fails an output it cannot decode. In another output format ``fmt`` the calls are
    that format's parse (:meth:`restlit.formats.Format.read_calls`).
    """
    found, errors = get_format(fmt).read_calls(output)
    calls = [(c["name"], c["arguments"]) for c in found]
    if item.irrelevance:
        verdict = check_irrelevance(calls)
        if verdict.passed and errors:
            return Verdict(True, f"no call, as expected (unparseable call text ignored: {errors[0]})")
        return verdict
    if errors:
        return Verdict(False, f"malformed tool call: {errors[0]}")
    if not calls:
        return Verdict(False, "no tool call in the output")
    return check_calls(calls, item.ground_truth, item.functions)


def _pick(options: list, required: bool) -> tuple[bool, Any]:
    """``(include, value)`` for one parameter of a reference answer: left out when ``""`` allows
    it and the schema does not require it; else the first possible value that is not ``""``.
    A dict there (or a dict element of a list) maps keys to possible values and is built the same
    way one level down; values below that level are concrete, as in BFCL's data."""
    if "" in options and not required:
        return False, None
    concrete = [o for o in options if o != ""]
    value = concrete[0] if concrete else ""
    if isinstance(value, dict):
        value = _pick_dict(value)
    elif isinstance(value, list):
        value = [_pick_dict(e) if isinstance(e, dict) else e for e in value]
    return True, value


def _pick_dict(possible: dict) -> dict:
    # a key whose possible values include "" is left out
    return {key: alternatives[0] for key, alternatives in possible.items() if "" not in alternatives}


def reference_output(item: BFCLItem, fmt: Format | str | None = None) -> str:
    """A canonical completion built from the item's possible answers (what a perfect model could
    write, in the output format ``fmt``); for irrelevance items, a response with no call. Used by
    tests and the benchmark."""
    from restlit.prompts import NO_CALL_RESPONSE

    render = get_format(fmt).render
    if item.irrelevance:
        return render("", [], NO_CALL_RESPONSE)
    docs = {f["name"]: f for f in item.functions}
    calls = []
    for entry in item.ground_truth:
        (name, possible), = entry.items()
        required = set((docs.get(name, {}).get("parameters") or {}).get("required") or ())
        args = {}
        for param, options in possible.items():
            keep, value = _pick(options, param in required)
            if keep:
                args[param] = value
        calls.append({"name": name, "arguments": args})
    return render("", calls, None)
