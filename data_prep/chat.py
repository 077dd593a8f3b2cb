"""The OpenAI / Hugging Face chat layout (TRL, chat templates, OpenAI fine-tuning files):
``{"messages": [{"role", "content", "tool_calls"}], "tools": [{"type": "function", "function":
{"name", "description", "parameters"}}]}``.

Roles: ``system`` (ignored but as a fallback source of the tool list), ``user``, ``assistant``
and ``tool`` (the tool output, kept verbatim; a non-text content is kept as JSON). An assistant
message's ``tool_calls`` are ``[{"type": "function", "function": {"name", "arguments"}}]`` (bare
``{"name", "arguments"}`` items too) with ``arguments`` a JSON string or an object; its
``content`` may be empty or None, start with ``<think>`` reasoning, or hold restlit's canonical
blocks (see :func:`restlit.data_prep.records.target_from_text`). Content given as a list of parts keeps
the text parts. An assistant message with ``"weight": 0`` (OpenAI's fine-tuning convention, and
what ``restlit prepare --export-chat`` writes for the history) is context, not a sample.
``tools`` may also be a JSON string; without it, the first JSON list of tools in the system
message is used, and a record with neither has no tools.
"""

from __future__ import annotations

import json
from typing import Any

from restlit.data_prep.records import (
    RecordError,
    Trace,
    Turn,
    calls_from_objects,
    require,
    target_from_text,
    tools_or_reject,
    unknown_roles,
)
from restlit.data_prep.schema import tools_from_field

SOURCE = "chat"

_ROLES = ("system", "user", "assistant", "tool")


def matches(record: Any) -> bool:
    """True for ``{messages: [{role, ...}]}`` records whose roles are all system/user/assistant/tool."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return False
    messages = record["messages"]
    return bool(messages) and all(isinstance(m, dict) and m.get("role") in _ROLES for m in messages)


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, None (""), or a list of ``{"type": "text", "text"}``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text", "")) for p in content if p.get("type", "text") == "text")
    raise RecordError("bad_field_type", f"{where}.content is a {type(content).__name__}, not text")


def _assistant(msg: dict, where: str) -> Turn:
    sample = msg.get("weight", 1) != 0
    try:
        raw_calls = msg.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise RecordError("call_parse_error", f"{where}.tool_calls is not a list")
        calls = calls_from_objects([c["function"] if isinstance(c, dict) and isinstance(c.get("function"), dict)
                                    else c for c in raw_calls])
        return Turn("assistant", target=target_from_text(_text(msg.get("content"), where), calls), sample=sample)
    except RecordError as exc:
        return Turn("assistant", error=exc, sample=sample)


def read(record: Any) -> Trace:
    """One chat record -> Trace; RecordError when the record as a whole is unusable."""
    messages = require(record, "messages", list)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RecordError("bad_field_type", f"messages[{i}] is not an object")
    unknown_roles([m.get("role") for m in messages], _ROLES, "'messages'")
    system = ""
    turns: list[Turn] = []
    for i, msg in enumerate(messages):
        role, where = msg["role"], f"messages[{i}]"
        if role == "assistant":
            turns.append(_assistant(msg, where))
            continue
        content = msg.get("content")
        if role == "tool" and isinstance(content, (dict, list)) and not _is_parts(content):
            text = json.dumps(content, ensure_ascii=False)
        else:
            text = _text(content, where)
        if role == "system":
            system = f"{system}\n{text}" if system else text
        else:
            turns.append(Turn(role, content=text.strip()))
    tools, warnings, tools_json = tools_or_reject(lambda v: tools_from_field(v, system), record.get("tools"))
    return Trace(tools, turns, warnings, tools_json)


def _is_parts(content: Any) -> bool:
    return isinstance(content, list) and bool(content) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content)
