"""The ShareGPT layout of LLaMA-Factory and many dataset forks:
``{"conversations": [{"from", "value"}], "system": str, "tools": str}``.

Roles: ``human`` / ``user`` (the user), ``gpt`` / ``assistant`` (a text answer, which may start
with ``<think>`` reasoning or hold restlit's canonical blocks), ``function_call`` (a call turn:
its value is a JSON object ``{"name", "arguments"}`` or a JSON list of them, parallel calls),
``observation`` / ``tool`` (the tool output, kept verbatim) and an optional ``system`` turn.
``tools`` is the function list as a JSON string (a list is accepted too); when it is missing,
empty or ``"[]"``, the function list is the first JSON list of tools inside the system text
(ToolACE conversions do that), and a record with neither has no tools.
"""

from __future__ import annotations

from typing import Any

from restlit.data_prep.records import (
    RecordError,
    Target,
    Trace,
    Turn,
    calls_from_data,
    require,
    target_from_text,
    tools_or_reject,
    unknown_roles,
)
from restlit.data_prep.schema import tools_from_field

SOURCE = "sharegpt"

_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant",
    "function_call": "call",
    "observation": "tool", "tool": "tool",
    "system": "system",
}
# roles only ShareGPT has: with one of them, or a "tools" field, a record is ShareGPT's
_OWN_ROLES = {"human", "gpt", "function_call", "observation", "system"}


def matches(record: Any) -> bool:
    """True for ``{conversations: [{from, value}]}`` records with ShareGPT's roles only and either a
    ``tools`` field or a role only ShareGPT has."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return False
    roles = [m.get("from") if isinstance(m, dict) else None for m in record["conversations"]]
    return (bool(roles) and all(r in _ROLES for r in roles)
            and ("tools" in record or any(r in _OWN_ROLES for r in roles)))


def _call_turn(value: Any) -> Turn:
    try:
        calls = calls_from_data(value, "function_call")
        if not calls:
            raise RecordError("call_parse_error", "function_call holds no call")
        return Turn("assistant", target=Target("", calls, None))
    except RecordError as exc:
        return Turn("assistant", error=exc)


def _text_turn(value: str) -> Turn:
    try:
        return Turn("assistant", target=target_from_text(value, []))
    except RecordError as exc:
        return Turn("assistant", error=exc)


def read(record: Any) -> Trace:
    """One ShareGPT record -> Trace; RecordError when the record as a whole is unusable."""
    conversations = require(record, "conversations", list)
    system = record.get("system") or ""
    if not isinstance(system, str):
        raise RecordError("bad_field_type", "'system' is not a string")
    for i, msg in enumerate(conversations):
        if not isinstance(msg, dict):
            raise RecordError("bad_field_type", f"conversations[{i}] is not an object")
    unknown_roles([m.get("from") for m in conversations], _ROLES, "'conversations'")
    turns: list[Turn] = []
    for i, msg in enumerate(conversations):
        role = _ROLES[msg["from"]]
        value = msg.get("value")
        if role == "call":
            turns.append(_call_turn(value))
            continue
        if not isinstance(value, str):
            raise RecordError("bad_field_type", f"conversations[{i}].value is not a string")
        if role == "system":
            system = f"{system}\n{value}" if system else value
        elif role == "assistant":
            turns.append(_text_turn(value))
        else:
            turns.append(Turn(role, content=value.strip()))
    tools, warnings, tools_json = tools_or_reject(lambda v: tools_from_field(v, system), record.get("tools"))
    return Trace(tools, turns, warnings, tools_json)
