"""Tool parameter schemas normalised to JSON Schema, and safe coercion of reference arguments.

Upstream datasets describe parameters three ways:

* ToolACE: JSON-Schema-like objects with ``"type": "dict"`` at the top, and loose type names
  (``"float"``, ``"int"``, ``"str"``, lists such as ``["string", "null"]``);
* xLAM / Hammer / ToolRL: a flat ``{param: {"type", "description", "default"}}`` dict whose type is
  a Python annotation string (``"int, optional"``, ``"List[int]"``, ``"Dict[str, Any]"``,
  ``"Tuple[float, float]"``, ``"Union[int, float]"``, ``"Callable[[float], float]"``);
* already valid JSON Schema.

:func:`normalize_parameters` turns all three into one JSON Schema ``object`` schema so that the
system prompt, validation and the reward see the same thing. A type we cannot map is kept
permissive (no ``type`` constraint) and reported as an ``unknown_type`` warning, never dropped.
Type annotations and loose type names are mapped by :mod:`restlit.data_prep.pytypes`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from restlit.data_prep.pytypes import UnknownType, python_type_to_schema, type_value_to_schema

__all__ = ["Normalizer", "UnknownType", "coerce_arguments", "coerce_value", "normalize_tools",
           "python_type_to_schema", "tools_from_field", "tools_from_json", "tools_from_system"]

# JSON Schema keywords whose value is one sub-schema / a dict of sub-schemas / a list of them.
_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not", "contains")
_SUBSCHEMA_DICT_KEYS = ("properties", "patternProperties", "$defs", "definitions")
_SUBSCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _is_schema_layout(params: Mapping) -> bool:
    """True for ``{"type": "object", "properties": ...}``, False for xLAM's flat layout.

    A flat dict may have parameters named ``type`` or ``properties``; their values are then
    parameter specs (dicts), which tells the two apart.
    """
    if isinstance(params.get("type"), str):
        return True
    props = params.get("properties")
    if isinstance(props, Mapping) and not isinstance(props.get("type"), str):
        return all(isinstance(v, (Mapping, str)) for v in props.values())
    return False


class Normalizer:
    """Normalises parameter schemas and remembers what it could not map.

    ``warnings`` lists one kind per problem met (``unknown_type``, ``duplicate_tool``), so a
    caller can count them per record. Use one instance per tool list.
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def _warn(self, kind: str) -> None:
        self.warnings.append(kind)

    def property_schema(self, spec: Any) -> tuple[dict, bool]:
        """One parameter's schema -> ``(JSON Schema, optional)``.

        Keeps description, enum, default, format, bounds and other annotations; rewrites
        ``type`` and recurses into ``items`` / ``properties`` / ``anyOf``... A boolean
        ``required``/``optional`` flag on the property (seen in ToolACE) becomes the returned
        ``optional`` so the caller can put it into the parent's ``required`` list.
        """
        if isinstance(spec, str):  # {"x": "int"} shorthand
            spec = {"type": spec}
        if not isinstance(spec, Mapping):
            self._warn("unknown_type")
            return {}, False
        out: dict[str, Any] = {}
        optional = False
        for key, value in spec.items():
            if key == "type":
                try:
                    mapped, opt = type_value_to_schema(value)
                except UnknownType:
                    self._warn("unknown_type")
                    continue
                optional |= opt
                out.update(mapped)
            elif key == "required" and isinstance(value, bool):
                optional |= not value
            elif key == "optional" and isinstance(value, bool):
                optional |= value
            elif key == "required" and isinstance(value, list):
                out["required"] = [r for r in value if isinstance(r, str)]
            elif key == "properties" and isinstance(value, Mapping):
                out[key] = value  # normalised below, once the "required" list is known
            elif key in _SUBSCHEMA_KEYS and isinstance(value, Mapping):
                out[key] = self.property_schema(value)[0]
            elif key in _SUBSCHEMA_DICT_KEYS and isinstance(value, Mapping):
                out[key] = {k: self.property_schema(v)[0] for k, v in value.items()}
            elif key in _SUBSCHEMA_LIST_KEYS and isinstance(value, list):
                out[key] = [self.property_schema(v)[0] for v in value]
            elif key == "enum" and not isinstance(value, list):
                continue  # a malformed enum would make the whole schema invalid
            elif key == "default" and value == "":
                continue  # xLAM writes "" for "no default"
            else:
                out[key] = value
        if isinstance(out.get("properties"), Mapping):
            # nested objects: ToolACE's boolean "required" on their properties joins their list
            out["properties"], required = self._properties(out["properties"], out.get("required", []))
            if required:
                out["required"] = required
            else:
                out.pop("required", None)
        # move "type" first so rendered schemas read naturally
        if "type" in out:
            out = {"type": out.pop("type"), **out}
        return out, optional

    def _properties(self, props: Mapping, required: list[str]) -> tuple[dict, list[str]]:
        """An object's ``properties`` normalised, and its ``required`` list with the properties'
        own flags applied: a property flagged optional leaves it, one with ``"required": true``
        joins it, names that are not properties are dropped."""
        schemas: dict[str, Any] = {}
        required = list(required)
        for name, spec in props.items():
            schema, optional = self.property_schema(spec)
            schemas[name] = schema
            if optional and name in required:
                required.remove(name)
            elif isinstance(spec, Mapping) and spec.get("required") is True and name not in required:
                required.append(name)
        return schemas, [r for r in required if r in schemas]

    def parameters(self, params: Any) -> dict:
        """A tool's ``parameters`` (any of the three layouts) -> a JSON Schema object schema.

        Required: ToolACE/JSON-Schema objects keep their ``required`` list (minus parameters
        flagged optional); flat xLAM dicts require a parameter unless its type says optional
        or it has a non-empty default.
        """
        if params is None or params == {} or params == []:
            return {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise TypeError("parameters is not an object")
        is_schema = _is_schema_layout(params)
        if is_schema:
            props_in = params.get("properties") or {}
            if not isinstance(props_in, Mapping):
                raise TypeError("parameters.properties is not an object")
            required_in = params.get("required")
            required = [r for r in required_in if isinstance(r, str)] if isinstance(required_in, list) else []
            out: dict[str, Any] = {"type": "object"}
            out["properties"], required = self._properties(props_in, required)
            if required:
                out["required"] = required
            for key, value in params.items():
                if key not in ("type", "properties", "required"):
                    out[key] = value
            return out
        # flat xLAM layout
        out = {"type": "object", "properties": {}}
        required = []
        for name, spec in params.items():
            schema, optional = self.property_schema(spec)
            out["properties"][name] = schema
            default = spec.get("default") if isinstance(spec, Mapping) else None
            has_default = default not in (None, "")
            if not optional and not has_default:
                required.append(name)
        if required:
            out["required"] = required
        return out

    def tool(self, raw: Any) -> dict:
        """One raw tool entry -> ``{"name", "description", "parameters"}``; ValueError or TypeError
        if unusable.

        Accepts the OpenAI wrapper ``{"type": "function", "function": {...}}`` too.
        """
        if isinstance(raw, Mapping) and raw.get("type") == "function" and isinstance(raw.get("function"), Mapping):
            raw = raw["function"]
        if not isinstance(raw, Mapping):
            raise TypeError("a tool entry is not an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a tool has no name")
        description = raw.get("description")
        if description is None:
            description = ""
        elif not isinstance(description, str):
            description = json.dumps(description, ensure_ascii=False)
        return {"name": name, "description": description, "parameters": self.parameters(raw.get("parameters"))}

    def tools(self, raw_tools: Any) -> list[dict]:
        """A raw tool list -> normalised tools; duplicate names keep the first (warning)."""
        if isinstance(raw_tools, Mapping):
            raw_tools = [raw_tools]
        if not isinstance(raw_tools, list):
            raise TypeError("the tool list is not a JSON list")
        out: list[dict] = []
        seen: set[str] = set()
        for raw in raw_tools:
            tool = self.tool(raw)
            if tool["name"] in seen:
                self._warn("duplicate_tool")
                continue
            seen.add(tool["name"])
            out.append(tool)
        return out


def normalize_tools(raw_tools: Any) -> tuple[list[dict], tuple[str, ...]]:
    """A raw tool list -> ``(normalised tools, warning kinds)``; ValueError/TypeError when unusable."""
    n = Normalizer()
    tools = n.tools(raw_tools)
    return tools, tuple(n.warnings)


@functools.lru_cache(maxsize=8192)
def tools_from_json(text: str) -> tuple[list[dict], tuple[str, ...], str]:
    """A tool list given as JSON text -> ``(tools, warning kinds, tools as compact JSON)``.

    Cached: upstream sets repeat the same tool lists across thousands of records. The returned
    tools are shared between callers and must not be modified. ValueError when the text is not
    JSON, ValueError or TypeError when the list is unusable.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from None
    tools, warnings = normalize_tools(raw)
    return tools, warnings, json.dumps(tools, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Coercion of reference arguments (--on-invalid coerce)

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _types_of(schema: Mapping) -> list[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    return []


def _matches(value: Any, json_type: str) -> bool:
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    if json_type == "null":
        return value is None
    return True


def _coerce_to(value: Any, json_type: str) -> tuple[bool, Any]:
    """One safe conversion of ``value`` to ``json_type``: ``(converted?, new value)``.

    Safe means no information is lost: ``"3"`` -> 3, ``"2.5"`` -> 2.5, ``2.0`` -> 2,
    ``"true"`` -> True, ``7`` -> ``"7"``, a string holding a JSON list/object -> that list/object.
    """
    if json_type == "integer":
        if isinstance(value, str) and _INT_RE.match(value.strip()):
            return True, int(value.strip())
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
    elif json_type == "number":
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            text = value.strip()
            return True, int(text) if _INT_RE.match(text) else float(text)
    elif json_type == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return True, value.strip().lower() == "true"
    elif json_type == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, json.dumps(value)
    elif json_type in ("array", "object") and isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{":
            try:
                decoded = json.loads(text)
            except ValueError:
                return False, value
            if _matches(decoded, json_type):
                return True, decoded
    return False, value


def coerce_value(value: Any, schema: Mapping, count: Callable[[], None]) -> Any:
    """Return ``value`` converted to fit ``schema`` where that is safe; ``count()`` per change.

    A value that already fits one of the schema's types is left alone; arrays and objects are
    coerced element-wise against ``items`` / ``properties``.
    """
    types = _types_of(schema)
    if types and not any(_matches(value, t) for t in types):
        for t in types:
            ok, new = _coerce_to(value, t)
            if ok:
                count()
                value = new
                break
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        value = [coerce_value(v, schema["items"], count) for v in value]
    elif isinstance(value, dict) and isinstance(schema.get("properties"), Mapping):
        props = schema["properties"]
        value = {k: coerce_value(v, props[k], count) if isinstance(props.get(k), Mapping) else v
                 for k, v in value.items()}
    return value


def coerce_arguments(arguments: Mapping, parameters: Mapping) -> tuple[dict, int]:
    """Coerce a call's arguments against its tool's normalised ``parameters`` schema.

    Returns ``(new arguments, number of values changed)``; the input is not modified.
    """
    changed = 0

    def count() -> None:
        nonlocal changed
        changed += 1

    props = parameters.get("properties") or {}
    out = {k: coerce_value(v, props[k], count) if isinstance(props.get(k), Mapping) else v
           for k, v in arguments.items()}
    return out, changed


_LIST_START = re.compile(r"\[\s*\{")


@functools.lru_cache(maxsize=4096)
def tools_from_system(system: str) -> tuple[list[dict], tuple[str, ...], str]:
    """The first JSON list of tool objects inside a system prompt, normalised (cached; ToolACE
    and many conversions put the tool list there). ValueError when there is none."""
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


def tools_from_field(tools: Any, system: str) -> tuple[list[dict], tuple[str, ...], str]:
    """A record's ``tools`` field (JSON text or a list) or, when it is missing, empty or ``"[]"``,
    the tool list inside ``system``; no tools when neither has one. ValueError or TypeError when
    the list given is unusable."""
    if isinstance(tools, str):
        if tools.strip() not in ("", "[]"):
            return tools_from_json(tools)
    elif isinstance(tools, list):
        if tools:
            # through the cached JSON path: such files repeat one tool list across many records
            return tools_from_json(json.dumps(tools, ensure_ascii=False))
    elif tools is not None:
        raise TypeError(f"'tools' is a {type(tools).__name__}, not a list or JSON text")
    try:
        return tools_from_system(system)
    except ValueError:  # no tool list anywhere: a dialogue without tools
        return [], (), "[]"
