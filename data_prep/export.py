"""``restlit prepare --export-chat FILE.jsonl``: samples in the OpenAI / Hugging Face chat layout.

One line per sample: ``{"id", "messages", "tools"}`` where ``messages`` are restlit's system
prompt (``restlit.prompts.render_system_prompt``), the history, and the target as the last
assistant message; ``tools`` are ``[{"type": "function", "function": {"name", "description",
"parameters"}}]``. Assistant messages carry their calls as ``tool_calls`` (``arguments`` an
object, as chat templates take them) and their reasoning and reply as ``content``
(``<think> ... </think>`` then the reply); history assistant messages have ``"weight": 0`` so
that they are context, not targets. :mod:`restlit.data_prep.chat` reads the file back into the same
samples, and TRL's SFTTrainer or any chat template takes it as it is.
"""

from __future__ import annotations

from typing import Any

from restlit.data_prep.records import Target, target_from_text
from restlit.prompts import render_system_prompt


def assistant_message(target: Target) -> dict[str, Any]:
    """One assistant turn as a chat message."""
    parts = [f"<think> {target.think} </think>"] if target.think else []
    if target.response is not None:
        text = target.response
        # a reply that is empty or could read as markup goes into an explicit <response> block
        wrap = not text or "<tool_call>" in text or "<response>" in text or text.lstrip().startswith("<think>")
        parts.append(f"<response> {text} </response>" if wrap else text)
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(parts)}
    if target.calls:
        message["tool_calls"] = [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in target.calls]
    return message


def chat_record(sample_id: str, tools: list[dict], history: list[dict[str, str]], target: Target) -> dict[str, Any]:
    """One sample as a chat record (see the module docstring)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": render_system_prompt(tools)}]
    for msg in history:
        if msg["role"] == "assistant":
            # the history holds assistant turns in the canonical format: back to their structure
            messages.append({**assistant_message(target_from_text(msg["content"], [])), "weight": 0})
        else:
            messages.append({"role": msg["role"], "content": msg["content"]})
    messages.append(assistant_message(target))
    return {"id": sample_id, "messages": messages,
            "tools": [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                         "parameters": t["parameters"]}} for t in tools]}
