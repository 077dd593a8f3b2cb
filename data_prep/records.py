"""The intermediate form every reader produces: a :class:`Trace` of one raw record.

Readers know their layout and nothing else; decomposition, validation, rendering and writing
work on traces, so a new layout only needs a new reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class RecordError(Exception):
    """A record (or one turn of it) cannot be used.

    ``reason`` is a short stable identifier counted in the manifest (``missing_field``,
    ``tools_not_json``, ``call_parse_error``, ...); ``detail`` is a human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def tools_or_reject(loader: Any, value: Any) -> tuple[list[dict], tuple[str, ...], str]:
    """Run a tool-list loader, turning its ValueError/TypeError into RecordError ``tools_not_json``."""
    try:
        return loader(value)
    except (ValueError, TypeError) as exc:
        raise RecordError("tools_not_json", str(exc)) from None
