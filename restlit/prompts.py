"""ToolRL's prompts and reference answers (the default output format, :mod:`restlit.formats.toolrl`;
the other formats render their own).

``restlit prepare`` stores references in this format, and training and evaluation in ToolRL's
format call these functions, so the policy is trained and scored on exactly the text it is
prompted with:

* :func:`render_system_prompt` - the system message: the tools as JSON Schema, one per line, and
  the output format of docs/method.md, "Output format";
* :func:`render_target` - a structured answer ``(think, calls, response)`` in that format;
* :func:`build_messages` - the chat messages of one sample, ready for
  ``tokenizer.apply_chat_template``.

Pure Python, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("system", "user", "assistant", "tool")

# Response used when a dataset's reference answer is "no tool applies" (Hammer's and xLAM's
# empty call list) but gives no text: the output format needs <tool_call> or <response>.
NO_CALL_RESPONSE = "None of the available tools can be used for this request."

_SYSTEM_TEMPLATE = """\
You are an assistant that solves the user's task by calling tools and answering in plain language. \
You may call several tools at once and use the results of earlier calls shown in the conversation.

# Tools
Each line below describes one tool as JSON: its name, what it does, and its parameters as JSON \
Schema (required parameters are listed under "required").
{tools}

# Output format
Answer every turn in exactly this format:
<think> your reasoning about the user's goal and which tools, if any, to use </think>
<tool_call>
{{"name": "tool name", "parameters": {{"parameter name": "value", "other parameter": 2}}}}
{{"name": "another tool", "parameters": {{}}}}
</tool_call>
<response> your reply to the user </response>

# Rules
1. Always start with <think> ... </think>.
2. Then give a <tool_call> block, a <response> block, or both (tool calls first).
3. Inside <tool_call>, write one JSON object per line with the keys "name" and "parameters"; \
use only the tools and parameters listed above, with values of the declared types, and an empty \
object when a tool takes no parameters.
4. If no tool fits the request, or required values are missing, say so in <response> instead of \
calling a tool."""

_NO_TOOLS = "(no tools are available in this conversation)"


def _dumps(obj: Any) -> str:
    # One line, non-ASCII kept readable; the default separators match docs/method.md's "Output format".
    return json.dumps(obj, ensure_ascii=False)


def render_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool list of the system prompt: one ``{"name", "description", "parameters"}`` per line."""
    if not tools:
        return _NO_TOOLS
    return "\n".join(
        _dumps({"name": t["name"], "description": t.get("description", ""), "parameters": t["parameters"]})
        for t in tools
    )


def render_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system message listing ``tools`` (normalised, JSON Schema parameters) and the format."""
    return _SYSTEM_TEMPLATE.format(tools=render_tools(tools))


def render_call(name: str, arguments: Mapping[str, Any]) -> str:
    """One call as the JSON line of a ``<tool_call>`` block: ``{"name": ..., "parameters": {...}}``."""
    return _dumps({"name": name, "parameters": dict(arguments)})


def render_target(think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
    """A structured answer in the canonical output format (docs/method.md, "Output format").

    ``<think> think </think>``, then a ``<tool_call>`` block with one JSON line per call (when
    ``calls`` is non-empty), then ``<response> response </response>`` (when ``response`` is not
    None), separated by newlines. An empty ``think`` renders as ``<think></think>`` (datasets
    without reasoning: nothing is invented). ``calls`` items are ``{"name", "arguments"}``.
    Raises ValueError when there is neither a call nor a response.
    """
    if not calls and response is None:
        raise ValueError("a target needs at least one call or a response")
    think = think.strip()
    parts = [f"<think> {think} </think>" if think else "<think></think>"]
    if calls:
        lines = "\n".join(render_call(c["name"], c["arguments"]) for c in calls)
        parts.append(f"<tool_call>\n{lines}\n</tool_call>")
    if response is not None:
        response = response.strip()
        parts.append(f"<response> {response} </response>" if response else "<response></response>")
    return "\n".join(parts)


def build_messages(
    tools: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, str]],
    target: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """Chat messages ``[{"role", "content"}]`` for one sample.

    ``[system prompt] + history`` and, when ``target`` (``{"think", "calls", "response"}``) is
    given, the reference answer as a final assistant message (for SFT). ``history`` items are
    ``{"role": "user" | "assistant" | "tool", "content"}`` with assistant content already in the
    canonical format (as prepared datasets store it).
    """
    for msg in history:
        if msg["role"] not in ROLES[1:]:
            raise ValueError(f"unexpected role in history: {msg['role']!r}")
    messages = [{"role": "system", "content": render_system_prompt(tools)}]
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    if target is not None:
        messages.append({
            "role": "assistant",
            "content": render_target(target["think"], target["calls"], target["response"]),
        })
    return messages
