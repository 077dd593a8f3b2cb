"""ToolACE's raw layout: ``{"system": str, "conversations": [{"from", "value"}]}``.

The tool list is a JSON list embedded in the system prompt; assistant turns are either a
Python-like call list ``[Tool Name(a="x", b=2), other(c=[1, 2])]`` or plain text for the user;
``tool`` turns hold the observations as ``[{"name", "results"}]`` JSON (kept verbatim). ToolACE
has no reasoning, so every target's ``think`` is "".
"""

from __future__ import annotations

import re
from typing import Any

from restlit.data_prep.records import (
    RecordError,
    Target,
    Trace,
    Turn,
    calls_from_parse,
    require,
    tools_or_reject,
    unknown_roles,
)
from restlit.data_prep.schema import tools_from_system
from restlit.toolcalls import parse_tool_calls

SOURCE = "toolace"

# ToolACE's own roles; ShareGPT's human/gpt/function_call/observation belong to data_prep.sharegpt
_ROLES = ("user", "assistant", "tool")
# ToolACE's call turns are a bracketed list starting with a call: "[Name(" or "[]"-free forms.
_CALL_LIST = re.compile(r"^\[\s*[^\s\[\](){}\"',=][^\[\](){}\"'=\n]*\(", re.DOTALL)


def _role(msg: Any) -> Any:
    return msg.get("from", msg.get("role")) if isinstance(msg, dict) else None


def matches(record: Any) -> bool:
    """True for ``{system, conversations}`` records (no ``tools`` field: that is ShareGPT's) whose
    turns all have ToolACE's roles."""
    if not (isinstance(record, dict) and isinstance(record.get("system"), str) and "tools" not in record):
        return False
    conversations = record.get("conversations")
    return isinstance(conversations, list) and bool(conversations) and all(
        _role(m) in _ROLES for m in conversations)


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
    for i, msg in enumerate(conversations):
        if not isinstance(msg, dict):
            raise RecordError("bad_field_type", f"conversations[{i}] is not an object")
    unknown_roles([_role(m) for m in conversations], _ROLES, "'conversations'")
    tools, warnings, tools_json = tools_or_reject(tools_from_system, system)
    turns: list[Turn] = []
    for i, msg in enumerate(conversations):
        role = _role(msg)
        value = msg.get("value", msg.get("content"))
        if not isinstance(value, str):
            raise RecordError("bad_field_type", f"conversations[{i}].value is not a string")
        turns.append(_assistant(value) if role == "assistant" else Turn(role, content=value.strip()))
    return Trace(tools, turns, warnings, tools_json)
