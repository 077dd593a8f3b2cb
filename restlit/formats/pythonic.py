"""The pythonic format (Llama 3.2 / 4, xLAM-style), read by vLLM's ``pythonic`` parser::

    [get_weather(city="Paris"), get_time()]

A turn with calls is only a Python list of calls with keyword arguments whose values are
literals; a turn without calls is plain text. There is no reasoning block. Tool names must be
Python identifiers (dotted names allowed) for the parser to read them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from restlit.callscan import scan_calls, skip_ws
from restlit.formats.base import Format
from restlit.regions import Region, Span, call_spans, partition

__all__ = ["PythonicFormat", "python_literal"]

# vLLM's PythonicToolParser.TOOL_CALL_REGEX, matched at the very start of the output.
_PATTERN = (r"\[([a-zA-Z]+\w*\(([a-zA-Z]+\w*=.*,\s*)*([a-zA-Z]+\w*=.*\s)?\),\s*)*"
            r"([a-zA-Z]+\w*\(([a-zA-Z]+\w*=.*,\s*)*([a-zA-Z]+\w*=.*\s*)?\)\s*)+\]")
try:  # vLLM runs it with the `regex` module under a 1 s timeout (VLLM_TOOL_PARSE_REGEX_TIMEOUT_SECONDS)
    import regex as _regex

    _TOOL_CALL = _regex.compile(_PATTERN, _regex.DOTALL)

    def _looks_like_calls(text: str) -> bool:
        try:
            return _TOOL_CALL.match(text, timeout=1) is not None
        except TimeoutError:
            return False
except ImportError:  # pragma: no cover - regex ships with transformers
    _TOOL_CALL = re.compile(_PATTERN, re.DOTALL)

    def _looks_like_calls(text: str) -> bool:
        return _TOOL_CALL.match(text) is not None

_JSON_NAMES = {"null": None, "true": True, "false": False}


class _NotLiteral(ValueError):
    pass


def _value(node: ast.expr) -> Any:
    """vLLM's ``get_parameter_value``: literals, containers (tuples and sets become lists),
    ``null``/``true``/``false``, signed numbers and placeholder-free f-strings."""
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (str, int, float)):
            return node.value
        raise _NotLiteral("not a JSON value")
    if isinstance(node, ast.Dict):
        if not all(isinstance(k, ast.Constant) for k in node.keys):
            raise _NotLiteral("dict keys must be literals")
        return {k.value: _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.JoinedStr) and all(isinstance(p, ast.Constant) for p in node.values):
        return "".join(str(p.value) for p in node.values)
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    raise _NotLiteral("arguments must be literals")


def _name(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise _NotLiteral("invalid tool call name")
    return ".".join([node.id, *reversed(parts)])


def python_literal(value: Any) -> str:
    """``value`` (JSON data) as a Python literal: strings double-quoted, ``True``/``False``/``None``."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{python_literal(str(k))}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


class PythonicFormat(Format):
    """The pythonic format: see the module docstring."""

    name = "pythonic"
    vllm_parser = "pythonic"
    tags = ()  # the list's own "[" and "]" are tagged FORMAT
    template_file = "pythonic.jinja"

    def render(self, think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
        """``[f(a=1, b="x"), g()]``; without calls the response text. The reasoning is not
        rendered, nor a response next to calls."""
        if calls:
            return "[" + ", ".join(
                f"{c['name']}(" + ", ".join(f"{k}={python_literal(v)}" for k, v in dict(c["arguments"]).items()) + ")"
                for c in calls) + "]"
        if response is None:
            raise ValueError("a target needs at least one call or a response")
        return response.strip()

    def parse(self, completion: str) -> list[dict[str, Any]]:
        """vLLM's ``pythonic`` parser: the output must start (no leading space) like vLLM's
        pattern of a call list, and its first statement must be a list of calls with literal
        keyword arguments, else no call. As in vLLM, positional arguments are dropped silently and
        statements after the first list are ignored."""
        if not _looks_like_calls(completion):
            return []
        try:
            body = ast.parse(completion).body
            parsed = getattr(body[0], "value", None)
            if not (isinstance(parsed, ast.List) and all(isinstance(e, ast.Call) for e in parsed.elts)):
                return []
            return [{"name": _name(e.func), "arguments": {k.arg: _value(k.value) for k in e.keywords}}
                    for e in parsed.elts]
        except (SyntaxError, ValueError, IndexError, RecursionError, MemoryError):
            return []

    def attempts_call(self, completion: str) -> bool:
        return completion.lstrip().startswith("[")

    def tag(self, text: str) -> list[Span]:
        """A text that starts with ``[`` is calls: the list's ``[`` and ``]`` FORMAT, each call's
        name TOOL_NAME, keywords PARAM_NAME, values PARAM_VALUE, the rest OTHER; any other text is
        RESPONSE (its surrounding whitespace OTHER)."""
        a = skip_ws(text, 0, len(text))
        if not text.startswith("[", a):
            return partition(text, [Span(a, len(text.rstrip()), Region.RESPONSE)] if text.strip() else [])
        marks = [Span(a, a + 1, Region.FORMAT)]
        scanned = scan_calls(text, a, len(text))
        calls = [c for c in scanned if c.syntax == "python" and c.in_list]
        if calls and calls[-1].ok:
            close = skip_ws(text, calls[-1].end, len(text))
            if text.startswith("]", close):
                marks.append(Span(close, close + 1, Region.FORMAT))
        call_spans(text, a, len(text), marks)
        return partition(text, marks)

    def format_ok(self, completion: str, target: Mapping[str, Any] | None = None) -> bool:
        """With calls: the whole text (surrounding whitespace aside) is one list of calls that
        vLLM parses, with keyword arguments only. Without: non-empty text not starting with ``[``."""
        text = completion.strip()
        calls = self.parse(completion)  # as vLLM reads it: a leading space is no call
        if target is not None and bool(target.get("calls")) != bool(calls):
            return False
        if not calls:
            return bool(text) and not text.startswith("[")
        try:
            body = ast.parse(text).body
        except SyntaxError:
            return False
        return len(body) == 1 and all(not e.args for e in body[0].value.elts)
