"""Python annotation strings and loose type names -> JSON Schema.

xLAM, Hammer and ToolRL give a parameter's type as a Python annotation (``"int, optional"``,
``"List[int]"``, ``"Dict[str, Any]"``, ``"Tuple[float, float]"``, ``"Union[int, float]"``,
``"Callable[[float], float]"``); ToolACE uses loose names (``"float"``, ``"dict"``, lists such as
``["string", "null"]``). :func:`python_type_to_schema` and :func:`type_value_to_schema` map them;
:mod:`restlit.data_prep.schema` builds whole parameter schemas from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Loose type names (ToolACE's, Python's, JSON Schema's own) -> JSON Schema type.
_SIMPLE_TYPES: dict[str, str] = {
    "string": "string", "str": "string", "text": "string", "char": "string",
    "integer": "integer", "int": "integer", "long": "integer",
    "number": "number", "float": "number", "double": "number", "decimal": "number",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array", "set": "array",
    "sequence": "array", "iterable": "array",
    "object": "object", "dict": "object", "mapping": "object", "map": "object",
    "null": "null", "none": "null", "nonetype": "null",
}
# Names that carry no constraint at all.
_ANY_TYPES = {"any"}
# Callables arrive in reference calls as source text ("lambda x: x ** 2"): a string.
_CALLABLE_TYPES = {"callable", "function", "lambda"}

_OPTIONAL_SUFFIX = re.compile(r"\s*,?\s*\(?optional\)?\s*$", re.IGNORECASE)


class UnknownType(ValueError):
    """A type annotation that no rule maps to JSON Schema."""


def _tokenize(text: str) -> list[str]:
    """Brackets, commas, quoted strings and names, in order; whitespace dropped."""
    return re.findall(r"\[|\]|,|'[^']*'|\"[^\"]*\"|[^\s\[\],]+", text)


class _TypeParser:
    """Recursive-descent parser for Python annotation strings (``Dict[str, List[int]]``)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.text = text

    def parse(self) -> dict:
        """The whole text as one JSON Schema; :class:`UnknownType` when it is not one annotation."""
        schema = self._type()
        if self.pos != len(self.tokens):
            raise UnknownType(self.text)
        return schema

    def _peek(self) -> str | None:
        """The next token, or None at the end."""
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        """Consume the next token (which must be ``expected`` when given)."""
        tok = self._peek()
        if tok is None or (expected is not None and tok != expected):
            raise UnknownType(self.text)
        self.pos += 1
        return tok

    def _args(self) -> list:
        """Bracketed, comma-separated arguments; ``[[float], float]`` nests lists (Callable)."""
        self._take("[")
        args: list = []
        while True:
            if self._peek() == "[":
                args.append(self._args())
            elif self._peek() == "...":
                self._take()
                args.append(...)
            elif self._peek() is not None and self._peek()[0] in "'\"":
                args.append(self._take()[1:-1])
            else:
                args.append(self._type())
            if self._peek() == ",":
                self._take()
                continue
            self._take("]")
            return args

    def _type(self) -> dict:
        """One type: a name, its bracketed arguments, and an ``or`` / ``|`` alternative."""
        name = self._take()
        # "typing.List" / "t.Dict" -> last component
        base = name.rsplit(".", 1)[-1].lower()
        args = self._args() if self._peek() == "[" else None
        # "int or float", "str | None"
        if self._peek() in ("or", "|"):
            self._take()
            other = self._type()
            return _union([_build(base, args, self.text), other])
        return _build(base, args, self.text)


def _union(options: list[dict]) -> dict:
    """``Union[...]``: a list of plain types when every option is a bare ``{"type": t}``."""
    flat: list[dict] = []
    for opt in options:
        flat.extend(opt["anyOf"] if set(opt) == {"anyOf"} else [opt])
    if any(not opt for opt in flat):  # Union with Any is Any
        return {}
    if all(set(opt) == {"type"} and isinstance(opt["type"], str) for opt in flat):
        types: list[str] = []
        for opt in flat:
            if opt["type"] not in types:
                types.append(opt["type"])
        return {"type": types[0] if len(types) == 1 else types}
    return {"anyOf": flat}


def _build(base: str, args: list | None, text: str) -> dict:
    """The schema for type name ``base`` (lower-cased, module prefix dropped) applied to ``args``."""
    if base in _ANY_TYPES:
        return {}
    if base in _CALLABLE_TYPES:
        return {"type": "string"}
    if base == "optional":
        if not args or len(args) != 1 or not isinstance(args[0], dict):
            raise UnknownType(text)
        return _union([args[0], {"type": "null"}])
    if base == "union":
        if not args or not all(isinstance(a, dict) for a in args):
            raise UnknownType(text)
        return _union(args)
    if base == "literal":
        if not args:
            raise UnknownType(text)
        values = [a for a in args if isinstance(a, str)]
        if len(values) != len(args):
            raise UnknownType(text)
        return {"type": "string", "enum": values}
    json_type = _SIMPLE_TYPES.get(base)
    if json_type is None:
        raise UnknownType(text)
    schema: dict[str, Any] = {"type": json_type}
    if not args:
        return schema
    if json_type == "array":
        items = [a for a in args if a is not ...]
        if not all(isinstance(a, dict) for a in items):
            raise UnknownType(text)
        if base == "tuple" and ... not in args and items:
            if all(a == items[0] for a in items):
                schema.update(items=items[0], minItems=len(items), maxItems=len(items))
            else:
                schema.update(prefixItems=items, minItems=len(items), maxItems=len(items))
        elif len(items) == 1:
            if items[0]:
                schema["items"] = items[0]
        elif items:
            raise UnknownType(text)
        return schema
    if json_type == "object":
        if len(args) == 2 and isinstance(args[1], dict):
            if args[1]:
                schema["additionalProperties"] = args[1]
            return schema
        raise UnknownType(text)
    raise UnknownType(text)


def python_type_to_schema(annotation: str) -> tuple[dict, bool]:
    """Map one Python-style annotation string to ``(JSON Schema, optional)``.

    ``optional`` is True when the text ends in ``", optional"`` or the type admits None
    (``Optional[...]``, ``X | None``): the parameter may be omitted. Raises :class:`UnknownType` when the text cannot be mapped.
    """
    text = annotation.strip()
    optional = False
    stripped = _OPTIONAL_SUFFIX.sub("", text)
    if stripped != text:
        optional, text = True, stripped
    if not text:
        raise UnknownType(annotation)
    schema = _TypeParser(text).parse()
    # Optional[X] / X | None: a parameter that may be None may also be left out
    return schema, optional or _accepts_null(schema)


def _accepts_null(schema: Mapping) -> bool:
    """True when ``schema`` admits None (a ``null`` type, directly or in an ``anyOf`` option)."""
    types = schema.get("type")
    if types == "null" or (isinstance(types, list) and "null" in types):
        return True
    return any(isinstance(s, Mapping) and _accepts_null(s) for s in schema.get("anyOf", ()))


def type_value_to_schema(value: Any) -> tuple[dict, bool]:
    """A ``"type"`` value from a schema-like dict: a name, an annotation, or a list of names."""
    if isinstance(value, list):
        # JSON Schema's ["string", "null"]: nullable, but whether it is required is the
        # parent's "required" list's business
        options = [type_value_to_schema(v)[0] for v in value]
        if not options:
            raise UnknownType(repr(value))
        return _union(options), False
    if not isinstance(value, str):
        raise UnknownType(repr(value))
    return python_type_to_schema(value)
