"""ToolRL's output format (the paper's, restlit's default)::

    <think> reasoning </think>
    <tool_call>
    {"name": "Tool name", "parameters": {"p1": "v1"}}
    </tool_call>
    <response> text for the user </response>

Tools are listed in restlit's own system prompt (:mod:`restlit.prompts`), rendered by the
tokenizer's chat template as it is. No serving stack reads this format (no vLLM parser).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from restlit.formats.base import Format
from restlit.formats.structure import structured
from restlit.prompts import build_messages, render_target
from restlit.regions import Span, blocks, tag
from restlit.tokens import prompt_ids
from restlit.toolcalls import parse_tool_calls

__all__ = ["CANONICAL_LAYOUTS", "ToolRLFormat", "format_ok", "predicted_calls", "structured"]

# The layouts of a canonical output when no reference says which one is expected.
CANONICAL_LAYOUTS = (("think", "tool_call"), ("think", "response"), ("think", "tool_call", "response"))


def _expected_kinds(target: Mapping[str, Any]) -> tuple[str, ...]:
    return ("think",) + (("tool_call",) if target.get("calls") else ()) + (
        ("response",) if target.get("response") is not None else ()
    )


def format_ok(completion: str, target: Mapping[str, Any] | None = None) -> bool:
    """True when ``completion`` has exactly the blocks the target's case needs, closed, each once, in order:
    ``think + tool_call``, ``think + response`` or ``think + tool_call + response`` (``think`` alone when the
    target has neither), and nothing but whitespace outside them (no stray tag or text, as ToolRL's
    ``^<think>...</think>\\n<tool_call>...</tool_call>$`` patterns require).

    Without a target (evaluation: is the output canonical, whatever the reference?) any of the three
    layouts :data:`CANONICAL_LAYOUTS` is accepted, and every line of a ``<tool_call>`` block must be one
    canonical JSON call (:func:`predicted_calls`).

    Blocks are :func:`restlit.regions.blocks`, so a tag named inside a block's text ("I put the call in the
    <tool_call> tags") is text, not a tag. ToolRL counts raw tag strings instead, which fails 17 of the 400
    references in its own ``rlla_sft.json``.
    """
    found = blocks(completion)
    kinds = tuple(b.kind for b in found)
    layouts = CANONICAL_LAYOUTS if target is None else (_expected_kinds(target),)
    if kinds not in layouts or not all(b.closed for b in found):
        return False
    outside, last = [], 0
    for b in found:
        outside.append(completion[last : b.start])
        last = b.end
    outside.append(completion[last:])
    if any(part.strip() for part in outside):
        return False
    return target is not None or "tool_call" not in kinds or predicted_calls(completion) is not None


def predicted_calls(completion: str) -> list[dict] | None:
    """The completion's calls as ``{"name", "arguments"}`` dicts, or None when ToolRL would give the minimum:
    no closed ``<tool_call>`` block, or a non-blank line inside one that is not exactly one JSON object with a
    string ``"name"`` and a ``"parameters"`` object (the canonical JSON-lines format; the tolerant forms
    :func:`restlit.toolcalls.parse_tool_calls` also reads, Python calls, JSON lists, single quotes, two calls on
    a line or one spread over lines, all count as malformed here)."""
    tool_blocks = [b for b in blocks(completion) if b.kind == "tool_call"]
    if not tool_blocks or not all(b.closed for b in tool_blocks):
        return None
    parsed = parse_tool_calls(completion)
    if parsed.errors or parsed.syntax != "json_lines":
        return None
    lines = [line.strip() for b in tool_blocks for line in completion[b.inner_start : b.inner_end].split("\n")]
    call_texts = [completion[c.start : c.end].strip() for c in parsed.calls]
    if [line for line in lines if line] != call_texts:
        return None
    for text in call_texts:
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("parameters"), dict):
            return None
    return [c.as_dict() for c in parsed.calls]


class ToolRLFormat(Format):
    """ToolRL's format: see the module docstring."""

    name = "toolrl"
    tags = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<response>", "</response>")

    def render(self, think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
        return render_target(think, calls, response)

    def parse(self, completion: str) -> list[dict[str, Any]]:
        """restlit's tolerant parse (:func:`restlit.toolcalls.parse_tool_calls`)."""
        return [c.as_dict() for c in parse_tool_calls(completion).calls]

    def predicted_calls(self, completion: str) -> list[dict[str, Any]] | None:
        return predicted_calls(completion)

    def attempts_call(self, completion: str) -> bool:
        return any(b.kind == "tool_call" for b in blocks(completion))

    def read_calls(self, completion: str) -> tuple[list[dict[str, Any]], list[str]]:
        """restlit's tolerant parse with its per-line errors."""
        parsed = parse_tool_calls(completion)
        return [c.as_dict() for c in parsed.calls], parsed.errors

    def final_calls(self, completion: str) -> tuple[list[dict[str, Any]], str | None]:
        """The calls of the last ``<tool_call>`` block (the API-Bank paper's protocol)."""
        found = [b for b in blocks(completion) if b.kind == "tool_call"]
        if not found:
            return [], "no <tool_call> block in the output"
        calls = parse_tool_calls(completion[found[-1].inner_start : found[-1].inner_end]).calls
        return [c.as_dict() for c in calls], None if calls else "no tool call in the last <tool_call> block"

    def tag(self, text: str) -> list[Span]:
        return tag(text)

    def format_ok(self, completion: str, target: Mapping[str, Any] | None = None) -> bool:
        return format_ok(completion, target)

    def history_message(self, message: Mapping[str, str]) -> dict[str, str]:
        return {"role": message["role"], "content": message["content"]}

    def messages(self, tools: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, str]],
                 target: Mapping[str, Any] | None = None, system: str | None = None) -> list[dict[str, Any]]:
        """restlit's system prompt listing the tools (:func:`restlit.prompts.build_messages`),
        ``system`` appended to it."""
        out = build_messages(tools, history, target)
        if system:
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + system}
        return out

    def prompt_text(self, tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, generation: bool = True) -> str:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation)

    def prompt_ids(self, tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        return prompt_ids(tokenizer, messages)
