"""Tool schema normalisation (ToolACE / xLAM / JSON Schema -> JSON Schema) and safe coercion."""

from __future__ import annotations

import jsonschema
import pytest

from restlit.data_prep.schema import (
    Normalizer,
    UnknownType,
    coerce_arguments,
    normalize_tools,
    python_type_to_schema,
    tools_from_json,
)
from restlit.toolcalls import validate_calls

# (annotation as written upstream, JSON Schema, may be omitted)
PYTHON_TYPES = [
    ("str", {"type": "string"}, False),
    ("string", {"type": "string"}, False),
    ("int", {"type": "integer"}, False),
    ("integer", {"type": "integer"}, False),
    ("float", {"type": "number"}, False),
    ("number", {"type": "number"}, False),
    ("bool", {"type": "boolean"}, False),
    ("boolean", {"type": "boolean"}, False),
    ("dict", {"type": "object"}, False),
    ("Dict", {"type": "object"}, False),
    ("object", {"type": "object"}, False),
    ("list", {"type": "array"}, False),
    ("List", {"type": "array"}, False),
    ("array", {"type": "array"}, False),
    ("str, optional", {"type": "string"}, True),
    ("int, optional", {"type": "integer"}, True),
    ("bool, optional", {"type": "boolean"}, True),
    ("float, optional", {"type": "number"}, True),
    ("List[int]", {"type": "array", "items": {"type": "integer"}}, False),
    ("List[str]", {"type": "array", "items": {"type": "string"}}, False),
    ("List[List[float]]", {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}, False),
    ("List[Union[int, float]]", {"type": "array", "items": {"type": ["integer", "number"]}}, False),
    ("Dict[str, Any]", {"type": "object"}, False),
    ("Dict[str, int]", {"type": "object", "additionalProperties": {"type": "integer"}}, False),
    ("Tuple[float, float]", {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, False),
    ("Tuple[int, str]",
     {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
     False),
    ("Tuple[int, ...]", {"type": "array", "items": {"type": "integer"}}, False),
    ("Set[str]", {"type": "array", "items": {"type": "string"}}, False),
    ("Union[int, float]", {"type": ["integer", "number"]}, False),
    ("Union[str, List[str]]", {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}, False),
    ("Optional[str]", {"type": ["string", "null"]}, True),
    ("str | None", {"type": ["string", "null"]}, True),
    ("int or float", {"type": ["integer", "number"]}, False),
    ("Callable[[float], float]", {"type": "string"}, False),
    ("Callable", {"type": "string"}, False),
    ("Any", {}, False),
    ("typing.List[str]", {"type": "array", "items": {"type": "string"}}, False),
    ("Literal['a', 'b']", {"type": "string", "enum": ["a", "b"]}, False),
]


@pytest.mark.parametrize(("annotation", "schema", "optional"), PYTHON_TYPES)
def test_python_type_table(annotation: str, schema: dict, optional: bool) -> None:
    assert python_type_to_schema(annotation) == (schema, optional)
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("annotation", ["datetime", "List[int", "Foo[int]", "", "Dict[str]", "List[int, str]"])
def test_unknown_annotations_raise(annotation: str) -> None:
    with pytest.raises(UnknownType):
        python_type_to_schema(annotation)


def test_toolace_dict_schema() -> None:
    n = Normalizer()
    params = n.parameters({
        "type": "dict",
        "properties": {
            "year": {"description": "The year", "type": "float"},
            "lang": {"description": "Language", "type": "string", "default": "en"},
            "ids": {"type": "array", "items": {"type": "int"}},
            "nullable": {"type": ["string", "null"]},
            "flagged": {"type": "string", "required": True},
            "opt": {"type": "str", "optional": True},
            "nested": {"type": "dict", "properties": {"k": {"type": "bool"}}, "required": ["k"]},
            "mystery": {"type": "datetime", "description": "kept, permissive"},
        },
        "required": ["year", "nullable", "opt"],
    })
    assert params == {
        "type": "object",
        "properties": {
            "year": {"type": "number", "description": "The year"},
            "lang": {"type": "string", "description": "Language", "default": "en"},
            "ids": {"type": "array", "items": {"type": "integer"}},
            "nullable": {"type": ["string", "null"]},
            "flagged": {"type": "string"},
            "opt": {"type": "string"},
            "nested": {"type": "object", "properties": {"k": {"type": "boolean"}}, "required": ["k"]},
            "mystery": {"description": "kept, permissive"},
        },
        "required": ["year", "nullable", "flagged"],
    }
    assert n.warnings == ["unknown_type"]
    jsonschema.Draft202012Validator.check_schema(params)


def test_xlam_flat_schema_required_rules() -> None:
    n = Normalizer()
    params = n.parameters({
        "a": {"description": "plain", "type": "str", "default": ""},
        "b": {"description": "optional suffix", "type": "int, optional", "default": ""},
        "c": {"description": "non-empty default", "type": "int", "default": 10},
        "d": {"description": "None default", "type": "List[int]", "default": None},
        "e": {"description": "string default", "type": "str", "default": "en"},
        "f": {"description": "unknown", "type": "numpy.ndarray", "default": ""},
    })
    assert params["required"] == ["a", "d", "f"]
    assert params["properties"]["c"] == {"type": "integer", "description": "non-empty default", "default": 10}
    assert "default" not in params["properties"]["a"]  # "" means "no default" in xLAM
    assert params["properties"]["f"] == {"description": "unknown"}
    assert n.warnings == ["unknown_type"]


def test_flat_params_named_like_schema_keywords() -> None:
    # an xLAM tool may have parameters literally called "type" or "properties"
    params = Normalizer().parameters({
        "type": {"type": "str", "description": "kind of thing", "default": ""},
        "properties": {"type": "dict", "description": "props", "default": ""},
    })
    assert params["properties"]["type"]["type"] == "string"
    assert params["properties"]["properties"]["type"] == "object"
    assert params["required"] == ["type", "properties"]


def test_tools_empty_parameters_and_duplicates() -> None:
    tools, warnings = normalize_tools([
        {"name": "a", "description": "x", "parameters": {}},
        {"name": "b"},
        {"type": "function", "function": {"name": "c", "parameters": {"type": "object", "properties": {}}}},
        {"name": "a", "description": "again", "parameters": {}},
    ])
    assert [t["name"] for t in tools] == ["a", "b", "c"]
    assert tools[1] == {"name": "b", "description": "", "parameters": {"type": "object", "properties": {}}}
    assert warnings == ("duplicate_tool",)


@pytest.mark.parametrize("bad", ['{"name": 1}', "[1, 2]", '[{"description": "no name"}]', "not json"])
def test_tools_from_json_rejects_unusable(bad: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        tools_from_json(bad)


def test_coerce_safe_conversions() -> None:
    params = Normalizer().parameters({
        "n": {"type": "int"}, "x": {"type": "float"}, "flag": {"type": "bool"}, "s": {"type": "str"},
        "xs": {"type": "List[int]"}, "obj": {"type": "dict"}, "keep": {"type": "int"},
        "whole": {"type": "int"},
    })
    args = {"n": "1", "x": "2.5", "flag": "True", "s": 7, "xs": ["1", 2], "obj": '{"a": 1}',
            "keep": "one", "whole": 3.0}
    out, changed = coerce_arguments(args, params)
    assert out == {"n": 1, "x": 2.5, "flag": True, "s": "7", "xs": [1, 2], "obj": {"a": 1},
                   "keep": "one", "whole": 3}
    assert changed == 7
    assert args["n"] == "1"  # input untouched


def test_coerce_leaves_valid_and_lossy_values() -> None:
    params = Normalizer().parameters({"n": {"type": "int"}, "u": {"type": "Union[int, str]"}})
    out, changed = coerce_arguments({"n": 2.5, "u": "x"}, params)
    assert out == {"n": 2.5, "u": "x"}
    assert changed == 0


def test_toolace_boolean_required_on_nested_properties_is_lifted() -> None:
    params = {"type": "dict", "properties": {
        "filter": {"type": "dict", "description": "what to match", "properties": {
            "genre": {"type": "string", "required": True},
            "year": {"type": "int", "required": False},
            "rating": {"type": "float"},
            "inner": {"type": "dict", "properties": {"x": {"type": "string", "required": True}}},
        }, "required": ["rating"]},
    }, "required": ["filter"]}
    out = Normalizer().parameters(params)
    nested = out["properties"]["filter"]
    assert nested["required"] == ["rating", "genre"]
    assert "required" not in nested["properties"]["genre"]
    assert nested["properties"]["inner"]["required"] == ["x"]
    assert out["required"] == ["filter"]
    # the lifted list is what validation checks
    tool = {"name": "f", "description": "", "parameters": out}
    (violation,) = validate_calls([{"name": "f", "arguments": {"filter": {"rating": 4.0}}}], [tool])
    assert "genre" in violation.reason
    assert validate_calls([{"name": "f", "arguments": {"filter": {"rating": 4.0, "genre": "jazz"}}}], [tool]) == []
