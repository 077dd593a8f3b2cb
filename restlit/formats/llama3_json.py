"""The Llama 3.1-3.3 JSON format, read by vLLM's ``llama3_json`` parser::

    {"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}

A turn with calls is only the calls: JSON objects separated by ``;``, optionally after the special
token ``<|python_tag|>``; a turn without calls is plain text. There is no reasoning block (a
target's reasoning is not rendered).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from restlit.callscan import skip_ws
from restlit.formats.base import Format
from restlit.regions import Region, Span, call_spans, partition

__all__ = ["PYTHON_TAG", "Llama3JsonFormat"]

PYTHON_TAG = "<|python_tag|>"
_DECODER = json.JSONDecoder()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


class Llama3JsonFormat(Format):
    """The Llama 3 JSON format: see the module docstring."""

    name = "llama3_json"
    vllm_parser = "llama3_json"
    tags = (PYTHON_TAG,)
    template_file = "llama3_json.jinja"

    def render(self, think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
        """The calls as ``{"name", "parameters"}`` objects joined by ``"; "``; without calls the
        response text. The reasoning is not rendered, nor a response next to calls."""
        if calls:
            return "; ".join(_dumps({"name": c["name"], "parameters": dict(c["arguments"])}) for c in calls)
        if response is None:
            raise ValueError("a target needs at least one call or a response")
        return response.strip()

    def parse(self, completion: str) -> list[dict[str, Any]]:
        """vLLM's ``llama3_json`` parser: every ``{`` not inside an earlier object starts a JSON
        object, anywhere in the text (text around them is ignored); each needs a string ``"name"``
        and ``"arguments"`` or ``"parameters"``, else there is no call at all. As in vLLM, a ``{``
        right after an object's closing brace is skipped, and one ``{`` in prose that is not JSON
        drops every call."""
        if PYTHON_TAG not in completion and "{" not in completion:
            return []
        out: list[dict[str, Any]] = []
        end = -1
        start = completion.find("{")
        while start >= 0:
            if start > end:
                try:
                    obj, n = _DECODER.raw_decode(completion[start:])
                    end = start + n
                    name = obj["name"]
                    arguments = obj["arguments"] if "arguments" in obj else obj["parameters"]
                except (ValueError, KeyError, TypeError):
                    return []
                if not isinstance(name, str):
                    return []
                out.append({"name": name, "arguments": arguments})
            start = completion.find("{", start + 1)
        return out

    def _call_start(self, text: str) -> tuple[int | None, int] | None:
        """``(tag_start or None, calls_start)`` when ``text`` starts like calls (``<|python_tag|>``
        or ``{``), else None."""
        i = skip_ws(text, 0, len(text))
        if text.startswith(PYTHON_TAG, i):
            return i, skip_ws(text, i + len(PYTHON_TAG), len(text))
        return (None, i) if text.startswith("{", i) else None

    def attempts_call(self, completion: str) -> bool:
        return self._call_start(completion) is not None

    def tag(self, text: str) -> list[Span]:
        """A text that starts with ``<|python_tag|>`` (FORMAT) or ``{`` is calls: names, keys and
        values tagged, the JSON punctuation and ``;`` OTHER; any other text is RESPONSE (its
        surrounding whitespace OTHER)."""
        start = self._call_start(text)
        marks: list[Span] = []
        if start is None:
            a = skip_ws(text, 0, len(text))
            marks.append(Span(a, len(text.rstrip()), Region.RESPONSE))
        else:
            tag_start, calls = start
            if tag_start is not None:
                marks.append(Span(tag_start, tag_start + len(PYTHON_TAG), Region.FORMAT))
            call_spans(text, calls, len(text), marks)
        return partition(text, [m for m in marks if m.end > m.start])

    def format_ok(self, completion: str, target: Mapping[str, Any] | None = None) -> bool:
        """With calls: nothing but JSON objects ``{"name": str, "parameters": object}`` separated
        by ``;`` (optionally after ``<|python_tag|>``), which vLLM parses as calls. Without: non-empty
        text in which vLLM finds no call and that does not start like one."""
        has_calls = bool(self.parse(completion))
        if target is not None and bool(target.get("calls")) != has_calls:
            return False
        start = self._call_start(completion)
        if not has_calls:
            return start is None and bool(completion.strip())
        if start is None:
            return False
        i, n = start[1], len(completion)
        while True:
            try:
                obj, k = _DECODER.raw_decode(completion, i)
            except ValueError:
                return False
            if not (isinstance(obj, dict) and set(obj) == {"name", "parameters"} and isinstance(obj["parameters"], dict)):
                return False
            i = skip_ws(completion, k, n)
            if i >= n:
                return True
            if completion[i] != ";":
                return False
            i = skip_ws(completion, i + 1, n)
