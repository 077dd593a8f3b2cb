"""A tolerant scanner for tool calls written as JSON objects or Python calls: structure and
character spans only, never values or validation.

Shared by :mod:`restlit.regions` (which tags the spans) and :mod:`restlit.toolcalls` (which parses
the same spans into values), so what is tagged TOOL_NAME / PARAM_NAME / PARAM_VALUE is exactly what
is parsed as a name, key and value. Standard library only. The rules it follows are in
:mod:`restlit.regions`' docstring. Never raises on malformed text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["ScannedCall", "scan_calls", "skip_ws", "starts_like_call"]

# --------------------------------------------------------------------------------------------
# A tolerant scanner for JSON and Python literals (structure and character spans only)
# --------------------------------------------------------------------------------------------

_WS = re.compile(r"\s*")
_DQ = re.compile(r'"(?:[^"\\\n]|\\.)*"?')
_SQ = re.compile(r"'(?:[^'\\\n]|\\.)*'?")
_ATOM = re.compile(r"""[^\s,:\[\]{}()"']+""")
# A Python call's name: tool names may hold spaces, dots, hyphens, apostrophes ("Songs of the '90s")
# and parenthesised parts ("Send OTP (Custom Template)(otp=1)"); the call's own "(" is the last one.
_NAME_CHARS = r"""[^()\[\]{},="\n<>]"""
_PY_CALL = re.compile(
    rf"""([^\s()\[\]{{}},="':<>]{_NAME_CHARS}*?(?:\s*\({_NAME_CHARS}*\){_NAME_CHARS}*?)*)\s*\("""
)
_PY_KEY = re.compile(r"""([^\s=(),\[\]{}"':]+)\s*=(?!=)""")
_FENCE = re.compile(r"```[\w-]*")
_MAX_DEPTH = 100
_CLOSER = {"{": "}", "[": "]", "(": ")"}


class _Node:
    """A scanned value: ``kind`` is 'obj', 'seq', 'str' or 'atom'; ``ok`` is False when it is cut
    off or malformed. Objects hold (key, value-or-None) pairs, sequences their elements."""

    __slots__ = ("end", "items", "kind", "ok", "start")

    def __init__(self, kind: str, start: int, end: int, ok: bool, items: list | None = None):
        self.kind, self.start, self.end, self.ok, self.items = kind, start, end, ok, items


def starts_like_call(text: str) -> int | None:
    """Where a bare call list would start in ``text`` (after leading space and an optional code
    fence) when the text starts like a call: ``{``, ``[`` or ``name(``; None otherwise."""
    start = _skip_ws(text, 0, len(text))
    fence = _FENCE.match(text, start)
    first = _skip_ws(text, fence.end(), len(text)) if fence else start
    if first < len(text) and (text[first] in "{[" or _PY_CALL.match(text, first)):
        return start
    return None


def skip_ws(s: str, i: int, b: int) -> int:
    """The first position at or after ``i`` (before ``b``) that is not whitespace."""
    return _skip_ws(s, i, b)


def _skip_ws(s: str, i: int, b: int) -> int:
    return _WS.match(s, i, b).end()


def _scan(s: str, i: int, b: int, depth: int = 0) -> _Node:
    """Scan one value starting at ``s[i]`` (not whitespace), never reading past ``b``."""
    c = s[i]
    if c in "{[(" and depth < _MAX_DEPTH:
        return _scan_container(s, i, b, depth)
    if c == '"' or c == "'":
        m = (_DQ if c == '"' else _SQ).match(s, i, b)
        end = m.end()
        return _Node("str", i, end, end - i >= 2 and s[end - 1] == c)
    m = _ATOM.match(s, i, b)
    end = m.end() if m else i
    return _Node("atom", i, end, end > i)


def _scan_container(s: str, i: int, b: int, depth: int) -> _Node:
    opener = s[i]
    closer = _CLOSER[opener]
    is_obj = opener == "{"
    items: list = []
    j = i + 1
    while True:
        j = _skip_ws(s, j, b)
        if j >= b:
            return _Node("obj" if is_obj else "seq", i, j, False, items)
        c = s[j]
        if c == closer:
            return _Node("obj" if is_obj else "seq", i, j + 1, True, items)
        if c == ",":  # tolerant of missing, extra and trailing commas
            j += 1
            continue
        if c in "}])":
            return _Node("obj" if is_obj else "seq", i, j, False, items)
        item = _scan(s, j, b, depth + 1)
        if item.end == j:  # no progress: give up on this container
            return _Node("obj" if is_obj else "seq", i, j, False, items)
        j = item.end
        if not is_obj:
            items.append(item)
            if not item.ok:
                return _Node("seq", i, j, False, items)
            continue
        j = _skip_ws(s, j, b)
        if not item.ok or j >= b or s[j] != ":":
            items.append((item, None))
            return _Node("obj", i, j, False, items)
        j = _skip_ws(s, j + 1, b)
        if j >= b:
            items.append((item, None))
            return _Node("obj", i, j, False, items)
        value = _scan(s, j, b, depth + 1)
        items.append((item, value))
        if value.end == j or not value.ok:
            return _Node("obj", i, value.end, False, items)
        j = value.end


def _key_text(s: str, node: _Node) -> str:
    """The text of a key node: a decoded string literal, or the bare word."""
    raw = s[node.start : node.end]
    if node.kind != "str":
        return raw
    if node.ok and raw[0] == '"':
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw[1 : -1 if node.ok else None]


# --------------------------------------------------------------------------------------------
# Calls: the scanner's view of a sequence of tool calls
# --------------------------------------------------------------------------------------------


@dataclass
class ScannedCall:
    """A scanned call with the character ranges the tagger and the parser
    (:mod:`restlit.toolcalls`) need. ``syntax`` is ``json``, ``python`` or ``text`` (a line that
    is not a call; ``error`` says why)."""

    syntax: str  # "json" | "python"
    start: int
    end: int
    ok: bool
    name: tuple[int, int] | None = None  # TOOL_NAME range
    params: list[tuple[tuple[int, int] | None, _Node | None]] = field(default_factory=list)
    node: _Node | None = None  # the JSON object (json syntax)
    error: str | None = None
    in_list: bool = False


def _json_call(s: str, node: _Node, in_list: bool) -> ScannedCall:
    call = ScannedCall("json", node.start, node.end, node.ok, node=node, in_list=in_list)
    for key, value in node.items:
        if key.kind != "str" or value is None:
            continue
        k = _key_text(s, key)
        if k == "name" and value.kind == "str" and call.name is None:
            call.name = (value.start, value.end)
        elif k in ("parameters", "arguments") and value.kind == "obj" and not call.params:
            call.params = [((pk.start, pk.end), pv) for pk, pv in value.items]
    return call


def _python_call(s: str, m: re.Match, b: int, in_list: bool) -> ScannedCall:
    call = ScannedCall("python", m.start(), m.end(), False, name=(m.start(1), m.end(1)), in_list=in_list)
    j = m.end()
    while True:
        j = _skip_ws(s, j, b)
        if j >= b:
            call.end = j
            return call
        c = s[j]
        if c == ")":
            call.end, call.ok = j + 1, True
            return call
        if c == ",":
            j += 1
            continue
        km = _PY_KEY.match(s, j, b)
        key = None
        if km:
            key = (km.start(1), km.end(1))
            j = _skip_ws(s, km.end(), b)
            if j >= b:
                call.params.append((key, None))
                call.end = j
                return call
        value = _scan(s, j, b)
        call.params.append((key, value if value.end > j else None))
        if value.end == j or not value.ok:
            call.end = max(value.end, j)
            return call
        j = value.end


def _line_end(s: str, i: int, b: int) -> int:
    k = s.find("\n", i, b)
    return b if k < 0 else k + 1


def scan_calls(s: str, a: int, b: int) -> list[ScannedCall]:
    """Scan ``s[a:b]`` as a sequence of calls. Unparseable lines become calls with ``error`` set
    and no name, so the parser can report them; the tagger leaves them OTHER. Never raises."""
    calls: list[ScannedCall] = []
    i = _skip_ws(s, a, b)
    while i < b:
        c = s[i]
        if c == "{":
            node = _scan(s, i, b)
            calls.append(_json_call(s, node, False))
            i = node.end if node.ok else max(_line_end(s, node.end, b), node.end)
        elif c == "[":
            k = _skip_ws(s, i + 1, b)
            if k < b and s[k] in "{]":
                i = _scan_json_list(s, i, b, calls)
            else:
                i = _scan_python_list(s, k, b, calls)
        elif c in ",;":  # ";" separates Llama 3's JSON calls
            i += 1
        else:
            m = _PY_CALL.match(s, i, b)
            fence = _FENCE.match(s, i, b)
            if fence:
                i = fence.end()
            elif m:
                call = _python_call(s, m, b, False)
                calls.append(call)
                i = call.end if call.ok else max(_line_end(s, call.end, b), call.end)
            else:
                end = _line_end(s, i, b)
                calls.append(ScannedCall("text", i, end, False, error="not a tool call"))
                i = end
        i = _skip_ws(s, i, b)
    return calls


def _scan_json_list(s: str, i: int, b: int, calls: list[ScannedCall]) -> int:
    node = _scan(s, i, b)
    for item in node.items or []:
        if item.kind == "obj":
            calls.append(_json_call(s, item, True))
        else:
            calls.append(ScannedCall("text", item.start, item.end, False, error="list item is not an object"))
    if node.ok:
        return node.end
    calls.append(ScannedCall("text", node.start, node.end, False, error="unterminated JSON list"))
    return max(_line_end(s, node.end, b), node.end)


def _scan_python_list(s: str, k: int, b: int, calls: list[ScannedCall]) -> int:
    """Python calls inside ``[ ... ]``; ``k`` is the first non-space after ``[``."""
    while k < b:
        if s[k] == "]":
            return k + 1
        if s[k] == ",":
            k = _skip_ws(s, k + 1, b)
            continue
        m = _PY_CALL.match(s, k, b)
        if not m:
            end = _line_end(s, k, b)
            calls.append(ScannedCall("text", k, end, False, error="not a tool call"))
            return end
        call = _python_call(s, m, b, True)
        calls.append(call)
        if not call.ok:
            return max(_line_end(s, call.end, b), call.end)
        k = _skip_ws(s, call.end, b)
    calls.append(ScannedCall("text", k, k, False, error="unterminated list of calls"))
    return b
