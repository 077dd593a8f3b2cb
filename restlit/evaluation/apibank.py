"""API-Bank levels 1-3 as the ResT paper scores them (ToolRL's processed test sets, shipped in
``restlit/evaluation/data/api-bank/`` with their licence and provenance).

Per item: a greedy answer to the item's ``system`` + ``user`` (``prompt="native"``, the
benchmark's own system prompt, to compare with published numbers) or to restlit's system prompt
listing the same tools (``prompt="restlit"``, :mod:`restlit.prompts`, for a restlit-trained model);
the calls of the output's last ``<tool_call>`` block; the item passes when some call has the
answer's name and exactly its parameters. "Exactly" is JSON equality with types: ``"3"`` is not
``3`` and ``true`` is not ``1`` (a number is a number: ``2`` equals ``2.0``).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.evaluation.ast_checker import Verdict
from restlit.formats import Format, get_format

__all__ = ["DATA_DIR", "LEVELS", "PROMPTS", "APIBankItem", "load_level", "messages", "reference_output",
           "score_output", "tools_of"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "api-bank"
LEVELS: tuple[str, ...] = ("level-1", "level-2", "level-3")
PROMPTS: tuple[str, ...] = ("native", "restlit")
# one tool of the system prompt: "1. Name: X\nDescription: D\nParameters: {...}" (levels 1-2) or
# "1. X: D\nParameters: {...}" (level 3)
_TOOL = re.compile(r"^\d+\. (?:Name: (?P<n1>.+?)\nDescription: (?P<d1>.*?)|(?P<n2>[^:\n]+): (?P<d2>.*?))"
                   r"\nParameters: (?P<params>\{.*\})$", re.MULTILINE)


@dataclass(frozen=True)
class APIBankItem:
    """One test item: ``id`` is ``level-<L>-<i>`` (``i`` the 0-based position in its file)."""

    id: str
    system: str
    user: str
    answer: dict[str, Any]  # {"name", "parameters"}


def load_level(level: str, limit: int | None = None) -> list[APIBankItem]:
    """The items of one level, in file order (the first ``limit``). ValueError for an unknown
    level or a missing / malformed file."""
    if level not in LEVELS:
        raise ValueError(f"unknown API-Bank level {level!r}; expected one of {', '.join(LEVELS)}")
    path = DATA_DIR / f"{level}-api_processed.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the API-Bank data ({exc})") from None
    items = []
    for i, row in enumerate(rows[:limit] if limit is not None else rows):
        answer = row["answer"][0] if isinstance(row["answer"], list) else row["answer"]
        items.append(APIBankItem(f"{level}-{i}", row["system"], row["user"],
                                 {"name": answer["name"], "parameters": answer["parameters"]}))
    return items


def tools_of(item: APIBankItem) -> list[dict[str, Any]]:
    """The tools listed in the item's own system prompt, normalised to JSON Schema."""
    from restlit.data_prep.schema import normalize_tools

    raw = [{"name": (m["n1"] or m["n2"]).strip(), "description": (m["d1"] or m["d2"] or "").strip(),
            "parameters": ast.literal_eval(m["params"])} for m in _TOOL.finditer(item.system)]
    tools, _warnings = normalize_tools(raw)
    return tools


def messages(item: APIBankItem, prompt: str = "native", fmt: Format | str | None = None) -> list[dict[str, Any]]:
    """The chat messages of one item: its own system prompt, or restlit's listing the same tools
    in the output format ``fmt``; the user message is the item's dialogue text either way."""
    if prompt == "native":
        return [{"role": "system", "content": item.system}, {"role": "user", "content": item.user}]
    if prompt == "restlit":
        return get_format(fmt).messages(tools_of(item), [{"role": "user", "content": item.user}])
    raise ValueError(f"unknown prompt {prompt!r}; expected one of {', '.join(PROMPTS)}")


def _typed(value: Any) -> Any:
    """A comparison key that keeps JSON types apart (bool, number, string, null, list, object)."""
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_typed(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    return ("other", repr(value))


def score_output(item: APIBankItem, output: str, fmt: Format | str | None = None) -> Verdict:
    """Soft match: some call of the output's last ``<tool_call>`` block (another output format
    ``fmt``: of its calls, :meth:`restlit.formats.Format.final_calls`) has the answer's name and
    exactly its parameters (an output without a block fails, as in the paper's protocol)."""
    calls, missing = get_format(fmt).final_calls(output)
    if missing:
        return Verdict(False, missing)
    name, expected = item.answer["name"], _typed(item.answer["parameters"])
    same_name = [c for c in calls if c["name"] == name]
    if any(_typed(c["arguments"]) == expected for c in same_name):
        return Verdict(True, "a call matches the answer")
    if not same_name:
        return Verdict(False, f"no call of {name!r} (got {', '.join(repr(c['name']) for c in calls)})")
    got = json.dumps(same_name[0]["arguments"], ensure_ascii=False)[:120]
    want = json.dumps(item.answer["parameters"], ensure_ascii=False)[:120]
    return Verdict(False, f"call {name!r}: parameters {got} differ from {want}")


def reference_output(item: APIBankItem, fmt: Format | str | None = None) -> str:
    """The answer as a canonical completion in the output format ``fmt`` (for tests and the
    predictions path)."""
    return get_format(fmt).render("", [{"name": item.answer["name"], "arguments": item.answer["parameters"]}], None)
