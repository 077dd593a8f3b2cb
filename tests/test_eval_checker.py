"""restlit's BFCL AST checker: each rule with a passing and a failing case, then BFCL's real data
(reference outputs score 100%, mutated ones fail with the right reason)."""

from __future__ import annotations

import copy
import json

import pytest

from restlit.evaluation import bfcl
from restlit.evaluation.ast_checker import check_call, check_calls, check_irrelevance, normalize_string

# A function doc in BFCL's layout, and its possible answers.
AREA = {
    "name": "geo.area",
    "description": "Area of a shape.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
            "city": {"type": "string"},
            "exact": {"type": "boolean"},
            "points": {"type": "array", "items": {"type": "integer"}},
            "coords": {"type": "tuple", "items": {"type": "float"}},
            "options": {"type": "dict", "properties": {"mode": {"type": "string"}, "level": {"type": "integer"}}},
            "rows": {"type": "array", "items": {"type": "dict"}},
            "payload": {"type": "any"},
            "rooms": {"type": "integer"},
        },
        "required": ["base", "height"],
    },
}
DOCS = {AREA["name"]: AREA}


def gt(**params):
    return {"geo.area": params}


def check(args, **params):
    return check_call("geo.area", args, gt(**params), DOCS)


BASE = {"base": [10], "height": [5.0]}


def test_name_must_match():
    assert check_call("geo.area", {"base": 10, "height": 5.0}, gt(**BASE), DOCS).passed
    v = check_call("geo_area", {"base": 10, "height": 5.0}, gt(**BASE), DOCS)
    assert not v.passed and v.reason == "wrong function name: expected 'geo.area', got 'geo_area'"


def test_required_parameters():
    assert check({"base": 10, "height": 5.0}, **BASE).passed
    v = check({"base": 10}, **BASE)
    assert not v.passed and v.reason == "missing required parameter 'height'"


def test_no_parameter_outside_schema_or_answers():
    v = check({"base": 10, "height": 5.0, "colour": "red"}, **BASE)
    assert not v.passed and v.reason == "unexpected parameter 'colour' (not in the function's schema)"
    v = check({"base": 10, "height": 5.0, "unit": "cm"}, **BASE)  # in the schema, not in the answers
    assert not v.passed and v.reason == "unexpected parameter 'unit' (not among the possible answers)"
    assert check({"base": 10, "height": 5.0, "unit": "cm"}, **BASE, unit=["cm", ""]).passed


def test_types_with_int_accepted_for_float():
    assert check({"base": 10, "height": 5}, **BASE).passed  # int for float
    v = check({"base": 10.0, "height": 5.0}, **BASE)  # float for int: no
    assert not v.passed and v.reason == "parameter 'base': expected type integer, got float 10.0"
    v = check({"base": "10", "height": 5.0}, **BASE)
    assert not v.passed and v.reason == "parameter 'base': expected type integer, got string '10'"
    v = check({"base": 10, "height": 5.0, "exact": 1}, **BASE, exact=[True])  # an int is not a bool
    assert not v.passed and v.reason == "parameter 'exact': expected type boolean, got integer 1"
    v = check({"base": True, "height": 5.0}, base=[1], height=[5.0])  # nor a bool an int
    assert not v.passed and "expected type integer, got boolean" in v.reason


def test_types_arrays_tuples_and_any():
    assert check({"base": 10, "height": 5.0, "coords": (1, 2.5)}, **BASE, coords=[[1.0, 2.5]]).passed
    v = check({"base": 10, "height": 5.0, "points": [1, "2"]}, **BASE, points=[[1, 2]])
    assert not v.passed and v.reason == "parameter 'points': element 1: expected type integer, got string '2'"
    v = check({"base": 10, "height": 5.0, "points": "1,2"}, **BASE, points=[[1, 2]])
    assert not v.passed and "expected type array, got string" in v.reason
    assert check({"base": 10, "height": 5.0, "payload": {"a": 1}}, **BASE, payload=[{"a": [1]}]).passed


def test_value_of_another_type_listed_in_the_answers_passes_type_check():
    # BFCL's answers hold e.g. "dontcare" for an integer parameter, or null
    assert check({"base": 10, "height": 5.0, "rooms": "dontcare"}, **BASE, rooms=[2, "dontcare"]).passed
    assert check({"base": 10, "height": 5.0, "city": None}, **BASE, city=[None]).passed
    v = check({"base": 10, "height": 5.0, "rooms": "two"}, **BASE, rooms=[2, "dontcare"])
    assert not v.passed and v.reason == "parameter 'rooms': got 'two', expected one of [2, 'dontcare']"


def test_string_normalisation():
    assert normalize_string("New York, NY") == "newyorkny"
    assert normalize_string("It's A-B_C*D^E/F.G") == 'it"sabcdefg'
    assert check({"base": 10, "height": 5.0, "city": "new york ny"}, **BASE, city=["New York, NY"]).passed
    assert check({"base": 10, "height": 5.0, "city": "NEW-YORK"}, **BASE, city=["new york"]).passed
    v = check({"base": 10, "height": 5.0, "city": "Boston"}, **BASE, city=["New York, NY", "NYC"])
    assert not v.passed and v.reason == "parameter 'city': got 'Boston', expected one of ['New York, NY', 'NYC']"


def test_wrong_value():
    assert check({"base": 10, "height": 5.0}, base=[10, 12], height=[5.0]).passed
    v = check({"base": 11, "height": 5.0}, **BASE)
    assert not v.passed and v.reason == "parameter 'base': got 11, expected 10"


def test_optional_parameters_via_empty_string():
    assert check({"base": 10, "height": 5.0}, **BASE, unit=["units", ""]).passed
    v = check({"base": 10, "height": 5.0}, **BASE, unit=["units"])  # not required by the schema, yet no ""
    assert not v.passed and v.reason == "missing parameter 'unit' (the possible answers do not allow leaving it out)"


def test_lists_element_wise():
    assert check({"base": 10, "height": 5.0, "points": [1, 2]}, **BASE, points=[[1, 2], [2, 1, 0]]).passed
    v = check({"base": 10, "height": 5.0, "points": [2, 1]}, **BASE, points=[[1, 2]])
    assert not v.passed and v.reason == "parameter 'points': element 0: got 2, expected 1"
    v = check({"base": 10, "height": 5.0, "points": [1, 2, 3]}, **BASE, points=[[1, 2]])
    assert not v.passed and v.reason == "parameter 'points': got 3 elements, expected 2"
    # strings inside lists are normalised too
    assert check({"base": 10, "height": 5.0, "payload": ["San Francisco"]}, **BASE, payload=[["san francisco"]]).passed


def test_dicts_element_wise():
    options = [{"mode": ["fast", "quick"], "level": [3, ""]}]
    assert check({"base": 10, "height": 5.0, "options": {"mode": "Quick"}}, **BASE, options=options).passed
    assert check({"base": 10, "height": 5.0, "options": {"mode": "fast", "level": 3}}, **BASE, options=options).passed
    v = check({"base": 10, "height": 5.0, "options": {"level": 3}}, **BASE, options=options)
    assert not v.passed and v.reason == "parameter 'options': missing key 'mode'"
    v = check({"base": 10, "height": 5.0, "options": {"mode": "fast", "speed": 1}}, **BASE, options=options)
    assert not v.passed and v.reason == "parameter 'options': unexpected key 'speed'"
    v = check({"base": 10, "height": 5.0, "options": {"mode": "slow"}}, **BASE, options=options)
    assert not v.passed and v.reason == "parameter 'options': key 'mode': got 'slow', expected one of ['fast', 'quick']"


def test_list_of_dicts():
    rows = [[{"x": [1], "y": ["a", ""]}, {"x": [2], "y": ["b"]}]]
    assert check({"base": 10, "height": 5.0, "rows": [{"x": 1}, {"x": 2, "y": "B"}]}, **BASE, rows=rows).passed
    v = check({"base": 10, "height": 5.0, "rows": [{"x": 1}, {"x": 2}]}, **BASE, rows=rows)
    assert not v.passed and v.reason == "parameter 'rows': element 1: missing key 'y'"


PAR = {"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}
G = {"name": "g", "parameters": {"type": "dict", "properties": {"b": {"type": "string"}}, "required": []}}


def test_parallel_order_free_with_equal_counts():
    truth = [{"f": {"a": [1]}}, {"f": {"a": [2]}}, {"g": {"b": ["x", ""]}}]
    calls = [("g", {}), ("f", {"a": 2}), ("f", {"a": 1})]
    v = check_calls(calls, truth, [PAR, G])
    assert v.passed and v.reason == "all 3 calls match"
    v = check_calls(calls[:2], truth, [PAR, G])
    assert not v.passed and v.reason == "expected 3 calls, got 2 calls ('g', 'f')"
    v = check_calls(calls + [("f", {"a": 1})], truth, [PAR, G])
    assert not v.passed and v.reason.startswith("expected 3 calls, got 4 calls")
    v = check_calls([("g", {}), ("f", {"a": 2}), ("f", {"a": 3})], truth, [PAR, G])
    assert not v.passed and v.reason == "expected call 1 ('f'): parameter 'a': got 3, expected 1"


def test_parallel_matching_is_not_greedy():
    # the first call fits both expected calls; greedy first-fit would give it to the first and fail
    truth = [{"f": {"a": [1, 2]}}, {"f": {"a": [1]}}]
    assert check_calls([("f", {"a": 1}), ("f", {"a": 2})], truth, [PAR]).passed


def test_multiple_expects_exactly_one_call():
    truth = [{"f": {"a": [1]}}]
    assert check_calls([("f", {"a": 1})], truth, [PAR, G]).passed
    v = check_calls([("f", {"a": 1}), ("g", {})], truth, [PAR, G])
    assert not v.passed and v.reason == "expected 1 call, got 2 calls ('f', 'g')"


def test_irrelevance_passes_with_no_call():
    assert check_irrelevance([]).reason == "no call, as expected"
    v = check_irrelevance([("f", {"a": 1})])
    assert not v.passed and v.reason == "expected no call, got 1 call ('f')"


# ---------------------------------------------------------------------------------------------
# Parsing outputs


def _item(category="simple_python", truth=None, functions=(PAR,)):
    return bfcl.BFCLItem("t_0", category, [{"role": "user", "content": "q"}], list(functions), truth)


def test_outputs_in_every_accepted_syntax():
    item = _item(truth=[{"f": {"a": [1]}}])
    for output in (
        '<think> x </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>',
        '[{"name": "f", "arguments": {"a": 1}}]',
        "[f(a=1)]",
    ):
        assert bfcl.score_output(item, output).passed, output
    v = bfcl.score_output(item, '<think> x </think>\n<tool_call>\n{"name": "f", "parameters": {a: 1}\n</tool_call>')
    assert not v.passed and v.reason.startswith("malformed tool call: line 3")
    v = bfcl.score_output(item, "<think> hmm </think>\n<response> I would call f. </response>")
    assert not v.passed and v.reason == "no tool call in the output"


def test_irrelevance_output_that_does_not_parse_counts_as_no_call():
    item = _item("irrelevance", None)
    assert bfcl.score_output(item, "<think> no tool fits </think>\n<response> Sorry. </response>").passed
    v = bfcl.score_output(item, "<tool_call>\nnot json\n</tool_call>")
    assert v.passed and "unparseable call text ignored" in v.reason
    v = bfcl.score_output(item, "[f(a=1)]")
    assert not v.passed and v.reason == "expected no call, got 1 call ('f')"


def test_item_messages_use_restlit_prompt_with_json_schema_tools():
    item = bfcl.BFCLItem(
        "live_x", "live_simple",
        [{"role": "system", "content": "You are a courier bot."}, {"role": "user", "content": "Where is my parcel?"}],
        [{"name": "track", "description": "Track a parcel.", "parameters": {
            "type": "dict", "properties": {"id": {"type": "string"}, "w": {"type": "float"}}, "required": ["id"]}}],
        [{"track": {"id": ["1"]}}],
    )
    messages = bfcl.item_messages(item)
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert "<tool_call>" in system and system.endswith("You are a courier bot.")
    tool_line = next(line for line in system.splitlines() if line.startswith('{"name": "track"'))
    params = json.loads(tool_line)["parameters"]
    assert params["type"] == "object" and params["properties"]["w"]["type"] == "number"


# ---------------------------------------------------------------------------------------------
# BFCL's real data

# Items that no output can pass under BFCL's rules (errors in BFCL's data), with the reason.
UNPASSABLE = {
    "live_simple_106-63-0": "parameter 'auto_loan_payment_start': the possible answers list no value for it",
    "live_simple_112-68-0": "parameter 'acc_routing_start': the possible answers list no value for it",
    "live_multiple_862-181-3": "unexpected parameter 'journey_start_time' (not in the function's schema)",
    "live_multiple_964-207-0": "missing required parameter 'statement'",
}


@pytest.fixture(scope="module")
def categories():
    return {c: bfcl.load_category(c) for c in bfcl.CATEGORIES}


def test_category_sizes(categories):
    sizes = {c: len(items) for c, items in categories.items()}
    assert sizes == {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
                     "irrelevance": 240, "live_simple": 258, "live_multiple": 1053, "live_parallel": 16,
                     "live_parallel_multiple": 24, "live_irrelevance": 884}
    assert bfcl.load_category("multiple", limit=5)[-1].id == "multiple_4"


@pytest.mark.parametrize("category", bfcl.CATEGORIES)
def test_reference_outputs_score_100_percent(categories, category):
    failures = {}
    for item in categories[category]:
        v = bfcl.score_output(item, bfcl.reference_output(item))
        if not v.passed:
            failures[item.id] = v.reason
    expected = {k: r for k, r in UNPASSABLE.items() if k.startswith(category + "_")}
    assert failures.keys() == expected.keys()
    for k, reason in expected.items():
        assert failures[k].startswith(reason)


def _python_call(name, args):
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


@pytest.mark.parametrize("category", ["simple_python", "parallel_multiple", "live_multiple"])
def test_reference_outputs_in_python_syntax_also_pass(categories, category):
    from restlit.toolcalls import parse_tool_calls

    for item in categories[category]:
        if item.id in UNPASSABLE:
            continue
        calls = parse_tool_calls(bfcl.reference_output(item)).calls
        text = "[" + ", ".join(_python_call(c.name, c.arguments) for c in reversed(calls)) + "]"
        v = bfcl.score_output(item, text)
        assert v.passed, (item.id, v.reason)


def _calls(item):
    from restlit.toolcalls import parse_tool_calls

    return [c.as_dict() for c in parse_tool_calls(bfcl.reference_output(item)).calls]


def _render(calls):
    from restlit.prompts import render_target

    return render_target("", calls, None)


def _scalar_required_param(item, call):
    """A required parameter of ``call`` with a string or number value, or None."""
    doc = next(f for f in item.functions if f["name"] == call["name"])
    for p in doc["parameters"].get("required", []):
        v = call["arguments"].get(p)
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return p
    return None


ANSWERED = [c for c in bfcl.CATEGORIES if "irrelevance" not in c]


@pytest.mark.parametrize("category", ANSWERED)
def test_mutated_answers_fail_with_the_right_reason(categories, category):
    checked = {"value": 0, "missing": 0, "extra": 0, "name": 0}
    single = not category.endswith(("parallel", "parallel_multiple"))
    for item in categories[category][:60]:
        if item.id in UNPASSABLE:
            continue
        calls = _calls(item)
        first = calls[0]
        param = _scalar_required_param(item, first)
        if param is not None:
            wrong = copy.deepcopy(calls)
            value = wrong[0]["arguments"][param]
            wrong[0]["arguments"][param] = "zzz not an answer" if isinstance(value, str) else value + 12345
            v = bfcl.score_output(item, _render(wrong))
            assert not v.passed and f"parameter {param!r}: got " in v.reason, (item.id, v.reason)
            if single:
                assert v.reason.startswith(f"parameter {param!r}: got ")
            checked["value"] += 1

            missing = copy.deepcopy(calls)
            del missing[0]["arguments"][param]
            v = bfcl.score_output(item, _render(missing))
            assert not v.passed and v.reason.endswith(f"missing required parameter {param!r}"), (item.id, v.reason)
            checked["missing"] += 1

        v = bfcl.score_output(item, _render(calls + [first]))
        n = len(calls)
        assert not v.passed and v.reason.startswith(f"expected {n} call{'s' * (n != 1)}, got {n + 1} calls")
        checked["extra"] += 1

        renamed = copy.deepcopy(calls)
        renamed[0]["name"] = first["name"] + "_v2"
        v = bfcl.score_output(item, _render(renamed))
        assert not v.passed and f"wrong function name: expected {first['name']!r}, got '{first['name']}_v2'" in v.reason
        checked["name"] += 1
    assert min(checked.values()) > 0, checked


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance"])
def test_a_call_on_an_irrelevance_item_fails(categories, category):
    for item in categories[category][:100]:
        if not item.functions:
            continue
        name = item.functions[0]["name"]
        v = bfcl.score_output(item, _render([{"name": name, "arguments": {}}]))
        assert not v.passed and v.reason == f"expected no call, got 1 call ({name!r})"
