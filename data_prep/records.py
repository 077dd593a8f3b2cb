"""The intermediate form every reader produces: a :class:`Trace` of one raw record.

Readers know their layout and nothing else; decomposition, validation, rendering and writing
work on traces, so a new layout only needs a new reader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from restlit.toolcalls import parse_tool_calls


class RecordError(Exception):
    """A record (or one turn of it) cannot be used.

    ``reason`` is a short stable identifier counted in the manifest (``missing_field``,
    ``tools_not_json``, ``call_parse_error``, ...); ``detail`` is a human-readable explanation.
    ``roles``: for ``bad_role``, the roles the reader does not know (counted per role).
    """

    def __init__(self, reason: str, detail: str, roles: tuple[str, ...] = ()) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.roles = roles


@dataclass
class Target:
    """One assistant turn, structured: what a model should produce at that point.

    ``calls`` are ``{"name": str, "arguments": dict}``; ``response`` is None when the turn has
    no text for the user. ``think`` is "" when the dataset carries no reasoning.
    """

    think: str
    calls: list[dict[str, Any]]
    response: str | None

    def to_dict(self) -> dict[str, Any]:
        """``{"think", "calls", "response"}``: the shape the reward code consumes."""
        return {"think": self.think, "calls": self.calls, "response": self.response}


@dataclass
class Turn:
    """One message of a trace.

    ``role`` is ``user``, ``assistant`` or ``tool``. User and tool turns carry ``content``;
    assistant turns carry ``target``, or ``error`` when their text could not be parsed (the turn
    is then rejected, and so are later turns whose history would contain it). ``sample`` is
    False for assistant turns that are context only: ToolRL and Hammer records hold a dialogue
    history plus one target, and their earlier turns are other records of the same dataset.
    """

    role: str
    content: str = ""
    target: Target | None = None
    error: RecordError | None = None
    sample: bool = True


@dataclass
class Trace:
    """One raw record read: its tools (normalised JSON Schema) and its turns in order."""

    tools: list[dict[str, Any]]
    turns: list[Turn]
    warnings: tuple[str, ...] = ()
    # the tools as compact JSON, when the reader already has it (saves re-encoding)
    tools_json: str | None = None

    @property
    def n_samples(self) -> int:
        """Number of assistant turns that become samples (or turn-level rejects)."""
        return sum(1 for t in self.turns if t.role == "assistant" and t.sample)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the readers


def require(record: Any, key: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, checked: RecordError ``missing_field`` / ``bad_field_type`` otherwise."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"the record is a JSON {type(record).__name__}, not an object")
    if key not in record or record[key] is None:
        raise RecordError("missing_field", f"no {key!r} field")
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError("bad_field_type", f"{key!r} is {type(value).__name__}, expected {names}")
    return value


def calls_from_parse(result: Any) -> list[dict[str, Any]]:
    """``ParseResult`` -> target calls ``[{"name", "arguments"}]``; RecordError when it had errors."""
    if result.errors:
        raise RecordError("call_parse_error", "; ".join(result.errors)[:500])
    return [{"name": c.name, "arguments": c.arguments} for c in result.calls]


def calls_from_objects(items: Any) -> list[dict[str, Any]]:
    """Calls given as data (``[{"name", "arguments" | "parameters"}]``) -> target calls.

    Arguments given as a JSON string (OpenAI style) are decoded. RecordError
    ``call_parse_error`` when an item is not of that shape.
    """
    if not isinstance(items, list):
        raise RecordError("call_parse_error", f"calls are a {type(items).__name__}, not a list")
    calls = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RecordError("call_parse_error", f"call {i} is not an object with a string 'name'")
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise RecordError("call_parse_error", f"call {i} ({item['name']}): arguments are not JSON") from None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise RecordError("call_parse_error", f"call {i} ({item['name']}): arguments are not an object")
        calls.append({"name": item["name"], "arguments": args})
    return calls


def calls_from_data(value: Any, what: str) -> list[dict[str, Any]]:
    """Calls given as JSON text or as data: a list of ``{"name", "arguments"}`` or one such object.
    RecordError ``call_parse_error`` when ``value`` is not JSON or not of that shape."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError("call_parse_error", f"{what} is not JSON ({exc.msg})") from None
    return calls_from_objects([value] if isinstance(value, dict) else value)


def tools_or_reject(loader: Any, value: Any) -> tuple[list[dict], tuple[str, ...], str]:
    """Run a tool-list loader, turning its ValueError/TypeError into RecordError ``tools_not_json``."""
    try:
        return loader(value)
    except (ValueError, TypeError) as exc:
        raise RecordError("tools_not_json", str(exc)) from None


def unknown_roles(roles: list[Any], known: Any, where: str) -> None:
    """RecordError ``bad_role`` naming every role of ``roles`` not in ``known`` (none: returns)."""
    unknown = tuple(dict.fromkeys(str(r) for r in roles if r not in known))
    if unknown:
        raise RecordError("bad_role", f"{where} holds roles this layout does not have: {', '.join(unknown)}",
                          roles=unknown)


_THINK_HEAD = re.compile(r"\s*<think>(.*?)</think>", re.DOTALL)
_TEXT_BLOCK = re.compile(r"<(tool_call|response)>(.*?)</\1>", re.DOTALL)


def target_from_text(text: str | None, calls: list[dict[str, Any]]) -> Target:
    """An assistant message's text, plus the calls given beside it as data, -> Target.

    A leading ``<think> ... </think>`` is the reasoning. The rest is either restlit's canonical
    format (``<tool_call>`` blocks, whose calls come after ``calls``, and a ``<response>`` block,
    nothing outside them) or plain text for the user; empty text means no response. RecordError
    ``bad_target`` for an unclosed ``<think>`` or text outside the blocks, ``call_parse_error``
    for a ``<tool_call>`` block that does not parse, ``empty_target`` when there is neither a
    call nor a response.
    """
    text = text or ""
    think, rest = "", text
    head = _THINK_HEAD.match(text)
    if head:
        think, rest = head.group(1).strip(), text[head.end():]
    elif text.lstrip().startswith("<think>"):
        raise RecordError("bad_target", "<think> is never closed")
    response: str | None = rest.strip() or None
    if "<tool_call>" in rest or "<response>" in rest:
        blocks = [(m.group(1), m.group(2)) for m in _TEXT_BLOCK.finditer(rest)]
        leftover = _TEXT_BLOCK.sub("", rest).strip()
        if leftover:
            raise RecordError("bad_target", f"text outside the <tool_call>/<response> blocks: {leftover[:60]!r}")
        replies = [body.strip() for kind, body in blocks if kind == "response"]
        if len(replies) > 1:
            raise RecordError("bad_target", "two <response> blocks")
        response = replies[0] if replies else None
        if any(kind == "tool_call" for kind, _ in blocks):
            calls = calls + calls_from_parse(parse_tool_calls(rest))
    if not calls and response is None:
        raise RecordError("empty_target", "the turn has neither a call nor a response")
    return Target(think, calls, response)
