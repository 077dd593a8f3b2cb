"""Hammer's layout: ``{"instruction", "input", "output"}`` with masked tool names.

The instruction holds the tool list (xLAM-style flat parameters) between
``[BEGIN OF AVAILABLE TOOLS]`` / ``[END OF AVAILABLE TOOLS]`` and the user query between
``[BEGIN OF QUERY]`` / ``[END OF QUERY]``; the output is a JSON list ``[{"name", "arguments"}]``
in a code fence. A non-empty ``input`` is appended to the query after a blank line. ``[]`` (no
tool applies) becomes restlit's fixed refusal response, as for xLAM.
"""

from __future__ import annotations

import re
from typing import Any

from restlit.data_prep.records import RecordError, Trace, Turn, calls_from_parse, require, tools_or_reject
from restlit.data_prep.schema import tools_from_json
from restlit.data_prep.xlam import target_from_calls
from restlit.toolcalls import parse_tool_calls

SOURCE = "hammer"

_TOOLS = re.compile(r"\[BEGIN OF AVAILABLE TOOLS\](.*?)\[END OF AVAILABLE TOOLS\]", re.DOTALL)
_QUERY = re.compile(r"\[BEGIN OF QUERY\](.*?)\[END OF QUERY\]", re.DOTALL)
_FENCE = re.compile(r"^```[\w-]*\s*|\s*```$")


def matches(record: Any) -> bool:
    """True for ``{instruction, input, output}`` records with Hammer's section markers."""
    return (isinstance(record, dict) and isinstance(record.get("instruction"), str)
            and "output" in record and "[BEGIN OF AVAILABLE TOOLS]" in record["instruction"])


def _tools(instruction: str) -> tuple[list[dict], tuple[str, ...], str]:
    m = _TOOLS.search(instruction)
    if not m:
        raise ValueError("no [BEGIN OF AVAILABLE TOOLS] section in 'instruction'")
    return tools_from_json(m.group(1).strip())


def read(record: Any) -> Trace:
    """One Hammer record -> a Trace of [user, assistant]; RecordError when unusable."""
    instruction = require(record, "instruction")
    output = require(record, "output")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise RecordError("bad_field_type", "'input' is not a string")
    tools, warnings, tools_json = tools_or_reject(_tools, instruction)
    m = _QUERY.search(instruction)
    if not m or not m.group(1).strip():
        raise RecordError("missing_field", "no [BEGIN OF QUERY] section in 'instruction'")
    query = m.group(1).strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    body = _FENCE.sub("", output.strip())
    try:
        if body.strip() == "[]":
            calls = []
        else:
            calls = calls_from_parse(parse_tool_calls(body))
            if not calls:
                raise RecordError("call_parse_error", f"output is not a JSON list of calls: {output[:80]!r}")
        target, warnings = target_from_calls(calls, warnings)
        assistant = Turn("assistant", target=target)
    except RecordError as exc:
        assistant = Turn("assistant", error=exc)
    return Trace(tools, [Turn("user", content=query), assistant], warnings, tools_json)
