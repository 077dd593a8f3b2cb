"""Reading a text in ToolRL's format back into its structure ``(think, calls, response)``:
prepared datasets store history turns in that format, and every other format re-renders them."""

from __future__ import annotations

from typing import Any

from restlit.regions import blocks
from restlit.toolcalls import parse_tool_calls

__all__ = ["structured"]


def structured(text: str) -> tuple[str, list[dict[str, Any]], str | None]:
    """``(think, calls, response)`` of a text in ToolRL's format (a prepared history turn): the
    first ``<think>`` and ``<response>`` blocks' text and the calls of its ``<tool_call>`` blocks."""
    think, response = "", None
    for b in blocks(text):
        inner = text[b.inner_start : b.inner_end].strip()
        if b.kind == "think" and not think:
            think = inner
        elif b.kind == "response" and response is None:
            response = inner
    calls = [c.as_dict() for c in parse_tool_calls(text).calls]
    if not calls and response is None and not blocks(text):
        response = text.strip()  # a plain-text turn
    return think, calls, response
