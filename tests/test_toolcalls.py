"""restlit.toolcalls: parsing tool calls (JSON lines, JSON lists, Python calls) and validating them
against JSON Schema; that the parsing names left restlit.regions."""

from __future__ import annotations

import ast
import json
import keyword

import pytest

from restlit.toolcalls import parse_tool_calls, validate_calls
from tests.conftest import TOOLACE, data_file
from tests.test_regions import reference_calls

# ---------------------------------------------------------------- real data


def test_parse_matches_json_reference_on_real_outputs(rlla_records):
    for rec in rlla_records:
        result = parse_tool_calls(rec["output"])
        ref = reference_calls(rec["output"])
        assert result.errors == []
        assert [c.as_dict() for c in result.calls] == [{"name": c["name"], "arguments": c["parameters"]} for c in ref]
        assert result.syntax == ("json_lines" if ref else "none")
        for call in result.calls:
            assert json.loads(rec["output"][call.start : call.end])["name"] == call.name



# ---------------------------------------------------------------- parse_tool_calls


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[func1(a=1, b="x"), func2(c=[1, 2])]', [("func1", {"a": 1, "b": "x"}), ("func2", {"c": [1, 2]})]),
        ("[math.factorial(number=5)]", [("math.factorial", {"number": 5})]),
        ('[Get Weather(city="San Francisco, CA", unit=\'celsius\')]', [("Get Weather", {"city": "San Francisco, CA", "unit": "celsius"})]),
        ('[f(s="a (b), c=\\"d\\"", x=-1.5e3, t=(1, 2), n=None, ok=True)]', [("f", {"s": 'a (b), c="d"', "x": -1500.0, "t": (1, 2), "n": None, "ok": True})]),
        ('[f(d={"k": True, "n": [1, {"z": None}]})]', [("f", {"d": {"k": True, "n": [1, {"z": None}]}})]),
        ("[f()]", [("f", {})]),
        ('f(a=1), g(b="y")', [("f", {"a": 1}), ("g", {"b": "y"})]),
        ('[{"name": "x", "arguments": {"a": 1}}, {"name": "y", "parameters": {}}]', [("x", {"a": 1}), ("y", {})]),
        ('{"name": "x", "arguments": "{\\"a\\": 1}"}', [("x", {"a": 1})]),
        ('```json\n[{"name": "x", "arguments": {"a": true}}]\n```', [("x", {"a": True})]),
        ("I cannot help with that.", []),
        ("", []),
    ],
)
def test_parse_bfcl_and_python_strings(text, expected):
    result = parse_tool_calls(text)
    assert result.errors == []
    assert [(c.name, c.arguments) for c in result.calls] == expected


def test_parse_reports_errors_with_reasons():
    r = parse_tool_calls('<tool_call>\n{"name": "f"}\n{"parameters": {}}\n[1, 2]\n</tool_call>')
    assert r.calls == []
    assert any("no 'parameters' object" in e for e in r.errors)
    assert any("no string 'name'" in e for e in r.errors)
    assert any(e.startswith("line 4: not a tool call") for e in r.errors)
    r = parse_tool_calls("[f(1, 2)]")
    assert r.calls == [] and "positional" in r.errors[0]
    r = parse_tool_calls("[f(a=open('x'))]")
    assert r.calls == [] and "argument 'a'" in r.errors[0]


def unswap(arg: str, odd_params: list[str]) -> str:
    return odd_params[int(arg[6:])] if arg.startswith("_param") else arg


def test_parse_toolace_python_call_strings():
    """Every call string of the ToolACE sample parses as Python's own parser reads it, once the tool
    names (which may hold spaces and hyphens) are swapped for identifiers; strings that Python
    rejects (broken escaping in the data) are errors here too. Names are tools of the record."""
    records = json.loads(data_file(TOOLACE).read_text())
    n_calls = n_broken = 0
    for rec in records:
        tool_list = json.loads(rec["system"][rec["system"].index("[{") : rec["system"].rindex("}]") + 2])
        names = sorted((t["name"] for t in tool_list), key=len, reverse=True)
        for turn in rec["conversations"]:
            value = turn["value"].strip()
            if turn["from"] != "assistant" or not any(value.startswith("[" + n + "(") for n in names):
                continue
            swapped = value
            for i, n in enumerate(names):
                swapped = swapped.replace(n + "(", f"_tool{i}(")
            odd_params = sorted({p for t in tool_list for p in (t["parameters"].get("properties") or {}) if not p.isidentifier() or keyword.iskeyword(p)}, key=len, reverse=True)
            for i, p in enumerate(odd_params):
                swapped = swapped.replace(p + "=", f"_param{i}=")
            result = parse_tool_calls(value)
            try:
                tree = ast.parse(swapped, mode="eval").body
            except SyntaxError:
                assert result.errors, value
                n_broken += 1
                continue
            expected = [(names[int(ast.unparse(c.func)[5:])], {unswap(k.arg, odd_params): ast.literal_eval(k.value) for k in c.keywords}) for c in tree.elts]
            assert result.errors == [] and result.syntax == "python", value
            assert [(c.name, c.arguments) for c in result.calls] == expected
            n_calls += len(expected)
    assert n_calls >= 150 and n_broken < n_calls / 10  # 11 strings of the sample have broken escaping


# ---------------------------------------------------------------- validate_calls

TOOLS = [
    {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "coords": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["city"],
        },
    },
    {"name": "free_form", "parameters": {"type": "object", "properties": {}, "additionalProperties": True}},
]


@pytest.mark.parametrize(
    "call, kind, param",
    [
        ({"name": "nope", "arguments": {}}, "unknown_tool", None),
        ({"name": "get_weather", "arguments": {"days": 2}}, "missing_required", "city"),
        ({"name": "get_weather", "arguments": {"city": "x", "zip": "1"}}, "unexpected_param", "zip"),
        ({"name": "get_weather", "arguments": {"city": "x", "days": "2"}}, "wrong_type", "days"),
        ({"name": "get_weather", "arguments": {"city": "x", "unit": "kelvin"}}, "not_in_enum", "unit"),
        ({"name": "get_weather", "arguments": {"city": "x", "coords": [1, "a"]}}, "wrong_type", "coords"),
        ({"name": "get_weather", "arguments": {"city": "x", "days": 0}}, "invalid", "days"),
    ],
)
def test_validate_each_violation_kind(call, kind, param):
    violations = validate_calls([call], TOOLS)
    assert [(v.kind, v.param) for v in violations] == [(kind, param)]
    assert violations[0].reason and (param is None or repr(param) in violations[0].reason)


def test_validate_accepts_valid_calls_and_toolcall_objects():
    calls = parse_tool_calls('[get_weather(city="Paris", days=3, unit="celsius", coords=[1, 2.5]), free_form(anything=1)]').calls
    assert validate_calls(calls, TOOLS) == []


def test_validator_compiled_once():
    from restlit import toolcalls

    toolcalls._VALIDATORS.clear()
    validate_calls([{"name": "get_weather", "arguments": {"city": "a"}}] * 5, TOOLS)
    validate_calls([{"name": "get_weather", "arguments": {"city": "b"}}], TOOLS)
    assert len(toolcalls._VALIDATORS) == 1


def test_invalid_schema_is_a_violation_not_a_crash():
    bad = [{"name": "t", "parameters": {"type": "dict", "properties": {}}}]
    [v] = validate_calls([{"name": "t", "arguments": {}}], bad)
    assert v.kind == "invalid" and "schema is invalid" in v.reason


# ---------------------------------------------------------------- the names that left restlit.regions


def test_parsing_names_live_only_in_toolcalls_after_the_deprecation_release():
    from restlit import regions

    for name in ("ParseResult", "ToolCall", "Violation", "parse_tool_calls", "validate_calls"):
        assert not hasattr(regions, name), name
    assert validate_calls.__module__ == "restlit.toolcalls"
