"""Hammer-style name masking: tool and parameter names replaced by random identifiers.

Hammer (Lin et al., 2024) trains on samples whose function and parameter names are random
strings, so that a model reads the descriptions instead of relying on names it memorised. The
mapping of one trace is applied consistently to its tool list (names, ``properties`` keys and
``required`` lists at every depth), to every call (tool names and argument keys, walking the
tool's schema into nested objects and arrays) and to tool observations that are JSON with a
``"name"`` field naming a tool (ToolACE's ``[{"name", "results"}]``). Descriptions, argument
values, user text and the text of other observations stay as they are.
"""

from __future__ import annotations

import dataclasses
import json
import random
import string
from collections.abc import Mapping
from typing import Any

from restlit.data_prep.records import Target, Trace, Turn

_FIRST = string.ascii_letters
_REST = string.ascii_letters + string.digits + "_"
# JSON Schema keywords holding one sub-schema / a list of them (under "properties": a dict of them)
_ONE = ("items", "additionalProperties", "not", "contains")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")


def _identifier(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = rng.choice(_FIRST) + "".join(rng.choice(_REST) for _ in range(rng.randint(4, 14)))
        if name not in taken:
            taken.add(name)
            return name


def _property_names(schema: Any, out: dict[str, None]) -> None:
    """Every ``properties`` key in ``schema``, at every depth, in order of appearance."""
    if not isinstance(schema, Mapping):
        return
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            out.setdefault(name, None)
            _property_names(sub, out)
    for key in _ONE:
        _property_names(schema.get(key), out)
    for key in _MANY:
        for sub in schema.get(key) or ():
            _property_names(sub, out)


def _rename_schema(schema: Any, params: Mapping[str, str]) -> Any:
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {params.get(k, k): _rename_schema(v, params) for k, v in value.items()}
        elif key == "required" and isinstance(value, list):
            out[key] = [params.get(r, r) if isinstance(r, str) else r for r in value]
        elif key in _ONE:
            out[key] = _rename_schema(value, params)
        elif key in _MANY and isinstance(value, list):
            out[key] = [_rename_schema(v, params) for v in value]
        else:
            out[key] = value
    return out


def _rename_value(value: Any, schema: Any, params: Mapping[str, str]) -> Any:
    """Rename the keys of ``value`` that its (original) ``schema`` declares as properties."""
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, Mapping):
            return {params.get(k, k) if k in props else k: _rename_value(v, props.get(k), params)
                    for k, v in value.items()}
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_rename_value(v, schema["items"], params) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Mask:
    """One trace's mapping: ``tools`` old tool name -> new, ``params`` old parameter name -> new."""

    tools: dict[str, str]
    params: dict[str, str]
    schemas: dict[str, Any]  # the original parameters schema of every tool, by old name

    @classmethod
    def draw(cls, tools: list[dict], rng: random.Random) -> Mask:
        """A fresh random identifier for every tool name and every parameter name of ``tools``."""
        taken: set[str] = set()
        names: dict[str, None] = {}
        for tool in tools:
            _property_names(tool["parameters"], names)
        return cls({t["name"]: _identifier(rng, taken) for t in tools},
                   {p: _identifier(rng, taken) for p in names},
                   {t["name"]: t["parameters"] for t in tools})

    def tool_list(self, tools: list[dict]) -> list[dict]:
        return [{**t, "name": self.tools[t["name"]], "parameters": _rename_schema(t["parameters"], self.params)}
                for t in tools]

    def call(self, call: dict) -> dict:
        name = call["name"]
        if name not in self.tools:  # not in the tool list: left as is, and rejected as unknown_tool
            return call
        return {"name": self.tools[name], "arguments": _rename_value(call["arguments"], self.schemas[name],
                                                                     self.params)}

    def observation(self, text: str) -> str:
        """A tool output: JSON naming a tool under ``"name"`` gets the new name; other text is kept."""
        if '"name"' not in text:
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return text
        items = value if isinstance(value, list) else [value]
        changed = False
        for item in items:
            if isinstance(item, dict) and item.get("name") in self.tools:
                item["name"] = self.tools[item["name"]]
                changed = True
        return json.dumps(value, ensure_ascii=False) if changed else text


def mask_trace(trace: Trace, rng: random.Random) -> Trace:
    """``trace`` with every tool and parameter name replaced, consistently (see the module docstring)."""
    mask = Mask.draw(trace.tools, rng)
    turns = []
    for turn in trace.turns:
        if turn.target is not None:
            t = turn.target
            turn = dataclasses.replace(turn, target=Target(t.think, [mask.call(c) for c in t.calls], t.response))
        elif turn.role == "tool":
            turn = Turn("tool", content=mask.observation(turn.content))
        turns.append(turn)
    return Trace(mask.tool_list(trace.tools), turns, trace.warnings)
