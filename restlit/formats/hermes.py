"""The Hermes format (Qwen2.5 / Qwen3, Hermes and many others), read by vLLM's ``hermes`` parser::

    <think>
    reasoning
    </think>

    free text for the user
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

The reasoning block is optional; each call is one ``<tool_call>`` block holding one JSON object
with ``"name"`` and ``"arguments"``. The text before the first call is the answer's content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from restlit.formats.base import Format
from restlit.regions import BlockSyntax, Region, Span, blocks, tag

__all__ = ["HERMES_BLOCKS", "HermesFormat"]

HERMES_BLOCKS = BlockSyntax(("think", "tool_call"), (Region.THINK, Region.OTHER), outside=Region.RESPONSE)
# vLLM's Hermes2ProToolParser.tool_call_regex: a closed block, or an unclosed one to the end.
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


_TAG = re.compile(r"</?(think|tool_call)>")


def _untagged(text: str) -> str:
    return _TAG.sub(lambda m: m.group(1), text.strip())


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


class HermesFormat(Format):
    """The Hermes format: see the module docstring."""

    name = "hermes"
    vllm_parser = "hermes"
    tags = ("<think>", "</think>", "<tool_call>", "</tool_call>")
    template_file = "hermes.jinja"

    def render(self, think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
        """``<think>\\nthink\\n</think>\\n\\n`` (when there is reasoning), the response text, then
        one ``<tool_call>`` block per call, separated by newlines."""
        if not calls and response is None:
            raise ValueError("a target needs at least one call or a response")
        think, response = _untagged(think), None if response is None else _untagged(response)
        head = f"<think>\n{think}\n</think>\n\n" if think else ""
        body = [response] if response else []
        body += [f"<tool_call>\n{_dumps({'name': c['name'], 'arguments': dict(c['arguments'])})}\n</tool_call>"
                 for c in calls]
        return head + "\n".join(body)

    def parse(self, completion: str) -> list[dict[str, Any]]:
        """vLLM's ``hermes`` parser: every ``<tool_call>`` block (an unclosed last one runs to the
        end) must hold a JSON object with a string ``"name"`` and an ``"arguments"`` key, else no
        call at all (one bad block drops the others, as vLLM does); a ``<tool_call>`` inside the
        reasoning counts too, as it does for vLLM."""
        if "<tool_call>" not in completion:
            return []
        out = []
        try:
            for closed, unclosed in _CALL.findall(completion):
                obj = json.loads(closed if closed else unclosed)
                name, arguments = obj["name"], obj["arguments"]
                if not isinstance(name, str):  # vLLM's FunctionCall(name=...) rejects it
                    return []
                out.append({"name": name, "arguments": arguments})
        except (ValueError, KeyError, TypeError, IndexError):
            return []
        return out

    def attempts_call(self, completion: str) -> bool:
        return "<tool_call>" in completion

    def tag(self, text: str) -> list[Span]:
        """``<think>``/``<tool_call>`` tags FORMAT, the reasoning THINK, the calls' names, keys and
        values, free text outside the blocks RESPONSE (whitespace between blocks OTHER)."""
        return tag(text, HERMES_BLOCKS)

    def format_ok(self, completion: str, target: Mapping[str, Any] | None = None) -> bool:
        """At most one ``<think>`` block, first; then free text without tags; then closed
        ``<tool_call>`` blocks with only whitespace between and after them, each exactly one JSON
        object ``{"name": str, "arguments": object}``. With calls when the target has calls,
        else with non-empty text; without a target, either."""
        found = blocks(completion, HERMES_BLOCKS)
        if not all(b.closed for b in found):
            return False
        kinds = [b.kind for b in found]
        has_think = bool(kinds) and kinds[0] == "think"
        if kinds.count("think") > int(has_think) or (has_think and completion[: found[0].start].strip()):
            return False
        call_blocks = found[1:] if has_think else found
        text = completion[found[0].end if has_think else 0 : call_blocks[0].start if call_blocks else len(completion)]
        if any(t in text for t in self.tags):
            return False
        for b, nxt in zip(call_blocks, call_blocks[1:] + [None]):
            if completion[b.end : nxt.start if nxt else len(completion)].strip():
                return False
            try:
                obj = json.loads(completion[b.inner_start : b.inner_end])
            except ValueError:
                return False
            if not (isinstance(obj, dict) and set(obj) == {"name", "arguments"} and isinstance(obj["name"], str)
                    and isinstance(obj["arguments"], dict)):
                return False
        has_calls, has_text = bool(call_blocks), bool(text.strip())
        if target is None:
            return has_calls or has_text
        if bool(target.get("calls")) != has_calls:
            return False
        return has_calls or has_text
