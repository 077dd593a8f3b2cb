"""ToolACE's raw layout: ``{"system": str, "conversations": [{"from", "value"}]}``.

The tool list is a JSON list embedded in the system prompt; assistant turns are either a
Python-like call list ``[Tool Name(a="x", b=2), other(c=[1, 2])]`` or plain text for the user;
``tool`` turns hold the observations as ``[{"name", "results"}]`` JSON (kept verbatim). ToolACE
has no reasoning, so every target's ``think`` is "".
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from data_prep.records import RecordError, Target, Trace, Turn, calls_from_parse, require, tools_or_reject
from data_prep.schema import normalize_tools
from restlit.toolcalls import parse_tool_calls

SOURCE = "toolace"

_ROLES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
}
_LIST_START = re.compile(r"\[\s*\{")
# ToolACE's call turns are a bracketed list starting with a call: "[Name(" or "[]"-free forms.
_CALL_LIST = re.compile(r"^\[\s*[^\s\[\](){}\"',=][^\[\](){}\"'=\n]*\(", re.DOTALL)


def matches(record: Any) -> bool:
    """True when the record has ToolACE's keys."""
    return isinstance(record, dict) and "conversations" in record and "system" in record


@functools.lru_cache(maxsize=4096)
def _tools_from_system(system: str) -> tuple[list[dict], tuple[str, ...], str]:
    """The first JSON list of tool objects inside the system prompt, normalised (cached)."""
    decoder = json.JSONDecoder()
    for m in _LIST_START.finditer(system):
        try:
            value, _ = decoder.raw_decode(system, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and all(isinstance(t, dict) and "name" in t for t in value):
            tools, warnings = normalize_tools(value)
            return tools, warnings, json.dumps(tools, ensure_ascii=False)
    raise ValueError("no JSON tool list found in 'system'")


def _assistant(value: str) -> Turn:
    text = value.strip()
    if not text:
        return Turn("assistant", error=RecordError("empty_target", "empty assistant turn"))
    if _CALL_LIST.match(text) and text.endswith("]"):
        try:
            calls = calls_from_parse(parse_tool_calls(text))
        except RecordError as exc:
            return Turn("assistant", error=exc)
        if not calls:
            return Turn("assistant", error=RecordError("call_parse_error", f"no call in {text[:80]!r}"))
        return Turn("assistant", target=Target("", calls, None))
    return Turn("assistant", target=Target("", [], text))


def read(record: Any) -> Trace:
    """One ToolACE record -> Trace; RecordError when the record as a whole is unusable."""
    system = require(record, "system")
    conversations = require(record, "conversations", list)
    tools, warnings, tools_json = tools_or_reject(_tools_from_system, system)
    turns: list[Turn] = []
    for i, msg in enumerate(conversations):
        if not isinstance(msg, dict):
            raise RecordError("bad_field_type", f"conversations[{i}] is not an object")
        role = _ROLES.get(str(msg.get("from", msg.get("role", ""))).lower())
        if role is None:
            raise RecordError("bad_role", f"conversations[{i}] has unknown role {msg.get('from')!r}")
        value = msg.get("value", msg.get("content"))
        if not isinstance(value, str):
            raise RecordError("bad_field_type", f"conversations[{i}].value is not a string")
        turns.append(_assistant(value) if role == "assistant" else Turn(role, content=value.strip()))
    return Trace(tools, turns, warnings, tools_json)
