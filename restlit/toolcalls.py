"""Tool calls: parsing them out of a completion or a call string, and checking them against the
tools' JSON Schemas. The one place that turns call text into names and arguments (the tagger,
:mod:`restlit.regions`, scans the same text for character ranges only; this module decodes that
scan, so a parsed name, key or value is exactly what was tagged as one).

Accepted syntaxes: JSON objects ``{"name", "parameters" | "arguments"}`` one per line, several on
a line or pretty-printed; a JSON list of them; Python calls ``[Tool Name(a="x", b=2), f(c=[1, 2])]``
(names may hold spaces; values are Python or JSON literals). Parsing never raises: what does not
parse becomes one error string per call or line.

Needs only the standard library and ``jsonschema`` (imported when a call is first validated),
never torch.

Public API: :class:`ToolCall`, :class:`ParseResult`, :func:`parse_tool_calls`,
:class:`Violation`, :func:`validate_calls`.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from restlit.callscan import ScannedCall, scan_calls
from restlit.regions import call_ranges

__all__ = ["ParseResult", "ToolCall", "Violation", "parse_tool_calls", "validate_calls"]

# --------------------------------------------------------------------------------------------
# parse_tool_calls
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A parsed call; ``text[start:end]`` is the call's own text (the JSON object or the
    Python call expression)."""

    name: str
    arguments: dict
    start: int
    end: int

    def as_dict(self) -> dict:
        """``{"name": ..., "arguments": ...}``, the structured-target shape."""
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ParseResult:
    """Calls that parsed, one error string per call or line that did not, and the syntax seen:
    ``json_lines``, ``json_list``, ``python``, ``mixed`` or ``none`` (nothing call-like)."""

    calls: list[ToolCall]
    errors: list[str]
    syntax: str

    @property
    def ok(self) -> bool:
        return not self.errors


_LITERAL_WORDS = {"true": True, "false": False, "null": None}


def _literal(raw: str) -> Any:
    """A JSON or Python literal; raises ValueError when it is neither."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if raw in _LITERAL_WORDS:
            return _LITERAL_WORDS[raw]
        raise ValueError(f"not a JSON or Python literal: {raw[:40]!r}") from exc


def _decode(s: str, call: ScannedCall) -> tuple[ToolCall | None, str | None]:
    """Turn a scanned call into a ToolCall, or explain why not."""
    if call.error:
        return None, f"{call.error}: {s[call.start:call.end].strip()[:60]!r}"
    if not call.ok:
        return None, f"unterminated or malformed call: {s[call.start:call.end].strip()[:60]!r}"
    if call.syntax == "python":
        args = {}
        for key, value in call.params:
            if key is None:
                return None, f"positional argument in call {s[call.start:call.end][:60]!r}"
            try:
                args[s[key[0] : key[1]]] = _literal(s[value.start : value.end]) if value else None
            except ValueError as exc:
                return None, f"argument {s[key[0]:key[1]]!r}: {exc}"
        return ToolCall(s[call.name[0] : call.name[1]].strip(), args, call.start, call.end), None
    try:
        obj = _literal(s[call.start : call.end])
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    name = obj.get("name")
    if not isinstance(name, str):
        return None, "no string 'name'"
    args = obj.get("parameters", obj.get("arguments"))
    if isinstance(args, str):  # OpenAI-style arguments encoded as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            pass
    if not isinstance(args, dict):
        return None, f"call {name!r} has no 'parameters' object"
    return ToolCall(name, args, call.start, call.end), None


def parse_tool_calls(text: str) -> ParseResult:
    """Parse the tool calls of a completion or of a bare call string. Never raises.

    If ``text`` has ``<tool_call>`` blocks, the inside of every block is read; otherwise the whole
    text is (code fences are skipped). Accepted: JSON objects ``{"name", "parameters" |
    "arguments"}`` one per line (``json_lines``), a JSON list of them (``json_list``), and Python
    calls ``[Tool Name(a="x", b=2), f(c=[1, 2])]`` (``python``; names may contain spaces, values
    are Python or JSON literals). Text without tags that does not start like a call (prose) gives
    no calls and no errors. Each call or line that does not parse adds one error string with its
    line number.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    syntaxes: set[str] = set()
    for a, b in call_ranges(text):
        for scanned in scan_calls(text, a, b):
            call, err = _decode(text, scanned)
            if err:
                errors.append(f"line {text.count(chr(10), 0, scanned.start) + 1}: {err}")
                continue
            calls.append(call)
            syntaxes.add("python" if scanned.syntax == "python" else "json_list" if scanned.in_list else "json_lines")
    if not syntaxes:
        syntax = "none"
    elif len(syntaxes) == 1:
        syntax = syntaxes.pop()
    else:
        syntax = "mixed"
    return ParseResult(calls, errors, syntax)


# --------------------------------------------------------------------------------------------
# validate_calls
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One way a call breaks its tool's schema. ``kind`` is one of ``unknown_tool``,
    ``missing_required``, ``unexpected_param``, ``wrong_type``, ``not_in_enum``, ``invalid``
    (any other schema rule, or a tool whose schema is itself invalid), ``unresolvable_ref`` (the
    tool's schema has a ``$ref`` to something outside it or missing from it)."""

    call_index: int
    tool: str
    kind: str
    param: str | None
    reason: str


_VALIDATORS: dict[str, Any] = {}
_VALIDATOR_CACHE_SIZE = 4096


def _refuse_retrieval(uri: str) -> Any:
    """The registry's ``retrieve``: a tool schema's ``$ref`` never fetches a URL or reads a file."""
    raise LookupError(f"{uri} is outside the schema")


def _validator(schema: Mapping) -> Any:
    """A compiled jsonschema validator, cached by the schema's canonical JSON. Its ``$ref`` resolve
    only inside the schema itself (``#/$defs/...``, ``#/definitions/...``): a registry whose
    ``retrieve`` refuses every other URI, so a dataset's schema cannot make restlit fetch a URL or
    read a local file (jsonschema's default fetches both)."""
    from jsonschema import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for
    from referencing import Registry

    key = json.dumps(schema, sort_keys=True, default=str)
    v = _VALIDATORS.get(key)
    if v is None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
            v = cls(schema, registry=Registry(retrieve=_refuse_retrieval))
        except SchemaError as exc:
            v = exc
        if len(_VALIDATORS) >= _VALIDATOR_CACHE_SIZE:
            _VALIDATORS.clear()
        _VALIDATORS[key] = v
    return v


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def validate_calls(calls: Iterable[ToolCall | Mapping], tools: Sequence[Mapping]) -> list[Violation]:
    """Check calls against tools whose ``parameters`` are JSON Schema objects.

    ``calls`` are :class:`ToolCall` objects or mappings with ``name`` and ``arguments`` (or
    ``parameters``); ``tools`` are mappings with ``name`` and ``parameters``. A parameter not in
    the schema's ``properties`` is unexpected unless ``additionalProperties`` allows it
    explicitly. Each tool's validator is compiled once and cached. Returns the violations, each
    with a readable reason, in call order; an empty list means every call is valid.
    """
    by_name = {t["name"]: t for t in tools if isinstance(t, Mapping) and "name" in t}
    out: list[Violation] = []
    for idx, call in enumerate(calls):
        if isinstance(call, ToolCall):
            name, args = call.name, call.arguments
        else:
            name = call.get("name")
            args = call.get("arguments", call.get("parameters"))
        tool = by_name.get(name)
        if tool is None:
            out.append(Violation(idx, str(name), "unknown_tool", None, f"unknown tool {name!r}"))
            continue
        if not isinstance(args, Mapping):
            out.append(Violation(idx, name, "invalid", None, f"{name}: arguments are not an object"))
            continue
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        out.extend(_schema_violations(idx, name, dict(args), schema))
    return out


def _schema_violations(idx: int, name: str, args: dict, schema: Mapping) -> list[Violation]:
    validator = _validator(schema)
    if isinstance(validator, Exception):
        return [Violation(idx, name, "invalid", None, f"{name}: tool schema is invalid: {validator.message}")]
    from referencing.exceptions import Unresolvable

    try:
        errors = list(validator.iter_errors(args))
    except Unresolvable as exc:  # a $ref outside the schema, or to nothing inside it
        ref = getattr(getattr(exc, "_wrapped", exc), "ref", "?")
        return [Violation(idx, name, "unresolvable_ref", None,
                          f"{name}: tool schema has a $ref that cannot be resolved inside it: {ref!r}")]
    out: list[Violation] = []
    props = schema.get("properties")
    if isinstance(props, Mapping) and schema.get("additionalProperties") in (None, False):
        for key in args:
            if key not in props:
                out.append(Violation(idx, name, "unexpected_param", key, f"{name}: unexpected parameter {key!r}"))
    for req in schema.get("required") or ():
        if req not in args:
            out.append(Violation(idx, name, "missing_required", req, f"{name}: missing required parameter {req!r}"))
    for err in errors:
        kind = err.validator
        param = str(err.path[0]) if err.path else None
        if kind in ("required", "additionalProperties") and not err.path:
            continue  # reported above, one violation per parameter
        if kind == "type":
            where = f"parameter {param!r}" if param else "arguments"
            out.append(Violation(idx, name, "wrong_type", param,
                                 f"{name}: {where} should be {err.validator_value}, "
                                 f"got {_type_name(err.instance)} {json.dumps(err.instance, default=str)[:40]}"))
        elif kind == "enum":
            out.append(Violation(idx, name, "not_in_enum", param,
                                 f"{name}: parameter {param!r} = {json.dumps(err.instance, default=str)[:40]} "
                                 f"is not one of {err.validator_value}"))
        else:
            where = f"parameter {param!r}" if param else "arguments"
            out.append(Violation(idx, name, "invalid", param, f"{name}: {where}: {err.message}"))
    return out
