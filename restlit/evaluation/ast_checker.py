"""restlit's AST checker: BFCL's rules for judging tool calls against possible answers.

Written from the rules BFCL documents (docs/method.md, "BFCL, AST categories"), not from BFCL's code. Pure
Python, no torch. Every verdict carries a one-line reason, so a user can see why a model fails.

Inputs, in BFCL's layout:

* ``functions``: the item's function docs ``[{"name", "description", "parameters": {"type":
  "dict", "properties": {...}, "required": [...]}}]`` with BFCL's type names (``string``,
  ``integer``, ``float``, ``boolean``, ``array``, ``tuple``, ``dict``, ``any``; the JSON Schema
  names ``number`` and ``object`` are read too);
* ``ground_truth``: one ``{function name: {parameter: [possible values...]}}`` per expected call.

Rules, in the order they are checked (the first failure is the verdict's reason):

1. Call count: as many calls as expected (so ``multiple`` and ``simple`` need exactly one), and an
   irrelevance item passes only when no call was produced. Calls are matched in any order
   (a perfect matching between expected and produced calls, not a greedy pass).
2. The function name matches exactly.
3. Every parameter the schema lists as required is present.
4. No parameter outside the schema or outside the possible answers.
5. Types: the value has the schema's type (an ``int`` is accepted for ``float``, a Python tuple
   for ``array``/``tuple``, ``any`` accepts everything; array elements are checked against
   ``items``). BFCL's possible answers sometimes hold a value of another type than the schema's
   (a variable name such as ``"data['sales']"`` for an array, ``"dontcare"`` for an integer,
   ``null``): a value of the same type as a possible answer passes the type check, as in BFCL.
6. Value: the value equals one of the possible answers. Strings compare after lower-casing,
   removing spaces and ``,./-_*^`` and turning ``'`` into ``"``, at every depth. Numbers compare
   by value (``2 == 2.0``) but a bool is never a number. A list compares element-wise with a
   possible list of the same length. A dict possible answer maps each key to its own possible
   values: every key of the value must be one of them, every key left out must allow ``""``, and
   each present key's value must be one of its possible values (the same holds for dicts that
   are elements of a possible list).
7. A parameter left out passes only when its possible answers include ``""`` (BFCL's marker for
   "optional"), even when the schema does not require it.

Four items of BFCL's own data fail every output under these rules (a parameter with an empty
list of possible answers: live_simple_106-63-0, live_simple_112-68-0; an answer parameter missing
from the schema: live_multiple_862-181-3; a required parameter missing from the answer:
live_multiple_964-207-0); their reasons say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Verdict",
    "check_call",
    "check_calls",
    "check_irrelevance",
    "normalize_string",
    "value_kind",
]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one call or one item: ``passed`` and a one-line ``reason``."""

    passed: bool
    reason: str


_STRIP = str.maketrans("", "", " ,./-_*^")


def normalize_string(s: str) -> str:
    """BFCL's string standardisation: drop spaces and ``,./-_*^``, lower-case, ``'`` -> ``"``.

    So ``"April 1, 2024"`` equals ``"april 1 2024"``, and ``"New York, NY"`` equals ``"newyorkny"``.
    """
    return s.translate(_STRIP).lower().replace("'", '"')


# BFCL's Python-ish type names (and the JSON Schema names) -> the kind of a decoded value.
# None means "no type constraint".
_SCHEMA_KIND: dict[str, str | None] = {
    "string": "string", "str": "string",
    "integer": "integer", "int": "integer",
    "float": "float", "number": "float",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array",
    "dict": "dict", "object": "dict",
    "any": None,
}


def value_kind(value: Any) -> str:
    """The kind of a decoded value: ``boolean``, ``integer``, ``float``, ``string``, ``array``
    (list or tuple), ``dict``, ``null``, or the Python type name for anything else."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "dict"
    if value is None:
        return "null"
    return type(value).__name__


def _kind_ok(kind: str, expected: str | None) -> bool:
    return expected is None or kind == expected or (expected == "float" and kind == "integer")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected_text(options: Sequence[Any]) -> str:
    return f"expected {_short(options[0])}" if len(options) == 1 else f"expected one of {_short(list(options))}"


# ---------------------------------------------------------------------------------------------
# Values


def _same(value: Any, option: Any) -> bool:
    """Concrete equality with BFCL's string normalisation at every depth."""
    if isinstance(option, str):
        return isinstance(value, str) and normalize_string(value) == normalize_string(option)
    if isinstance(option, bool):
        return isinstance(value, bool) and value == option
    if isinstance(option, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == option
    if option is None:
        return value is None
    if isinstance(option, list):
        return (isinstance(value, (list, tuple)) and len(value) == len(option)
                and all(_same(v, o) for v, o in zip(value, option)))
    if isinstance(option, dict):
        return (isinstance(value, dict) and value.keys() == option.keys()
                and all(_same(value[k], o) for k, o in option.items()))
    return value == option


def _dict_mismatch(value: Any, option: Mapping[str, Sequence[Any]]) -> str | None:
    """Why ``value`` does not match a possible-answer dict (key -> possible values), or None."""
    if not isinstance(value, dict):
        return f"got {value_kind(value)} {_short(value)}, expected a dict"
    for key in value:
        if key not in option:
            return f"unexpected key {key!r}"
    for key, alternatives in option.items():
        if key not in value:
            if "" not in alternatives:
                return f"missing key {key!r}"
        elif not any(_same(value[key], a) for a in alternatives):
            return f"key {key!r}: got {_short(value[key])}, {_expected_text(alternatives)}"
    return None


def _list_mismatch(value: Any, option: list) -> str | None:
    """Why ``value`` does not match a possible list (element-wise; dict elements hold possible
    values per key), or None."""
    if not isinstance(value, (list, tuple)):
        return f"got {value_kind(value)} {_short(value)}, expected a list"
    if len(value) != len(option):
        return f"got {len(value)} elements, expected {len(option)}"
    for i, (v, o) in enumerate(zip(value, option)):
        if isinstance(o, dict):
            why = _dict_mismatch(v, o)
            if why:
                return f"element {i}: {why}"
        elif not _same(v, o):
            return f"element {i}: got {_short(v)}, expected {_short(o)}"
    return None


def _value_mismatch(value: Any, options: Sequence[Any]) -> str | None:
    """None when ``value`` matches one of ``options``; else why not (the reason given against
    the first structured option, when there is one, is the most telling)."""
    details = []
    for option in options:
        if isinstance(option, dict):
            why = _dict_mismatch(value, option)
        elif isinstance(option, list):
            why = _list_mismatch(value, option)
        else:
            why = None if _same(value, option) else ""
        if why is None:
            return None
        if why:
            details.append(why)
    if details and len([o for o in options if o != ""]) == 1:
        return details[0]
    return f"got {_short(value)}, {_expected_text(options)}"


def _type_mismatch(value: Any, schema: Mapping[str, Any], options: Sequence[Any]) -> str | None:
    """None when ``value`` has the parameter's type (or the type of one of its possible
    answers, BFCL's allowance for variables); else why not."""
    type_name = schema.get("type")
    expected = _SCHEMA_KIND.get(type_name) if isinstance(type_name, str) else None
    kind = value_kind(value)
    answer_kinds = {value_kind(o) for o in options if o != ""}
    if not _kind_ok(kind, expected):
        if kind in answer_kinds or (kind == "integer" and "float" in answer_kinds):
            return None
        return f"expected type {type_name}, got {kind} {_short(value)}"
    items = schema.get("items")
    if expected == "array" and isinstance(items, Mapping) and isinstance(items.get("type"), str):
        item_kind = _SCHEMA_KIND.get(items["type"])
        # element kinds found in the possible lists: same allowance as above, one level down
        element_kinds = {value_kind(e) for o in options if isinstance(o, list) for e in o}
        for i, element in enumerate(value):
            k = value_kind(element)
            if not _kind_ok(k, item_kind) and k not in element_kinds:
                return f"element {i}: expected type {items['type']}, got {k} {_short(element)}"
    return None


# ---------------------------------------------------------------------------------------------
# Calls


def check_call(
    name: str,
    arguments: Mapping[str, Any],
    expected: Mapping[str, Mapping[str, Sequence[Any]]],
    functions: Mapping[str, Mapping[str, Any]],
) -> Verdict:
    """Check one produced call ``name(**arguments)`` against one expected call.

    ``expected`` is one ground-truth entry ``{function name: {parameter: [possible values]}}``;
    ``functions`` maps function names to their docs. Applies rules 2-7 of the module docstring
    and returns the first failure, e.g. ``Verdict(False, "missing required parameter 'unit'")``.
    """
    (want_name, possible), = expected.items()
    if name != want_name:
        return Verdict(False, f"wrong function name: expected {want_name!r}, got {name!r}")
    doc = functions.get(want_name)
    if doc is None:
        return Verdict(False, f"the item's function list has no {want_name!r} (a data error)")
    params = doc.get("parameters") or {}
    properties = params.get("properties") or {}
    for param in params.get("required") or ():
        if param not in arguments:
            return Verdict(False, f"missing required parameter {param!r}")
    for param in arguments:
        if param not in properties:
            return Verdict(False, f"unexpected parameter {param!r} (not in the function's schema)")
        if param not in possible:
            return Verdict(False, f"unexpected parameter {param!r} (not among the possible answers)")
    for param, value in arguments.items():
        options = possible[param]
        if not options:
            return Verdict(False, f"parameter {param!r}: the possible answers list no value for it (a data error)")
        why = _type_mismatch(value, properties[param], options) or _value_mismatch(value, options)
        if why:
            return Verdict(False, f"parameter {param!r}: {why}")
    for param, options in possible.items():
        if param not in arguments and "" not in options:
            return Verdict(False, f"missing parameter {param!r} (the possible answers do not allow leaving it out)")
    return Verdict(True, "call matches")


def _perfect_matching(ok: list[list[bool]]) -> list[int]:
    """Maximum bipartite matching (Kuhn's augmenting paths): ``match[j]`` is the expected call
    matched to produced call ``j``, or -1. Greedy first-fit could miss a valid assignment when one
    produced call fits two expected ones."""
    n_expected, n_produced = len(ok), len(ok[0]) if ok else 0
    match = [-1] * n_produced

    def augment(i: int, seen: list[bool]) -> bool:
        for j in range(n_produced):
            if ok[i][j] and not seen[j]:
                seen[j] = True
                if match[j] < 0 or augment(match[j], seen):
                    match[j] = i
                    return True
        return False

    for i in range(n_expected):
        augment(i, [False] * n_produced)
    return match


def check_calls(
    calls: Sequence[tuple[str, Mapping[str, Any]]],
    ground_truth: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]],
    functions: Sequence[Mapping[str, Any]],
) -> Verdict:
    """Check produced calls ``[(name, arguments)]`` against an item's ground truth, in any order.

    The counts must be equal; then every expected call must be matched to a distinct produced
    call that passes :func:`check_call`. With one expected call the reason is that call's own;
    with several it names the first expected call left unmatched.
    """
    docs = {f["name"]: f for f in functions}
    n, m = len(ground_truth), len(calls)
    if m != n:
        got = "no call" if m == 0 else f"{m} call{'s' * (m != 1)} ({', '.join(repr(c[0]) for c in calls)})"
        return Verdict(False, f"expected {n} call{'s' * (n != 1)}, got {got}")
    if n == 1:
        return check_call(calls[0][0], calls[0][1], ground_truth[0], docs)
    verdicts = [[check_call(name, args, gt, docs) for name, args in calls] for gt in ground_truth]
    ok = [[v.passed for v in row] for row in verdicts]
    match = _perfect_matching(ok)
    matched = set(match)
    if len(matched - {-1}) == n:
        return Verdict(True, f"all {n} calls match")
    i = next(i for i in range(n) if i not in matched)
    (want_name,) = ground_truth[i]
    # explain against a produced call left over by the matching (there is one, as the counts are
    # equal), preferring one with the expected name: that is the call that should have fitted
    free = [j for j in range(m) if match[j] < 0]
    j = next((j for j in free if calls[j][0] == want_name), free[0])
    return Verdict(False, f"expected call {i + 1} ({want_name!r}): {verdicts[i][j].reason}")


def check_irrelevance(calls: Sequence[tuple[str, Mapping[str, Any]]]) -> Verdict:
    """An irrelevance item passes only when no call was produced."""
    if not calls:
        return Verdict(True, "no call, as expected")
    names = ", ".join(repr(name) for name, _ in calls)
    return Verdict(False, f"expected no call, got {len(calls)} call{'s' * (len(calls) != 1)} ({names})")
