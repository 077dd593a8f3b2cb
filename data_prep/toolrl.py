"""ToolRL's layouts: ``{"instruction", "input", "output"}`` (rlla_sft.json / rlla_rl.json) and the
processed parquet rows ``{"prompt": [{"role": "system"}, {"role": "user"}], "reward_model":
{"ground_truth"}}``.

* ``instruction``: ToolRL's system prompt; its **Available Tools** section lists
  ``N. Name: ...`` / ``Description: ...`` / ``Parameters: {json}`` (flat xLAM-style parameters);
* ``input``: the dialogue so far as ``<user>``, ``<think>``/``<tool_call>``/``<response>`` and
  ``<obs>`` blocks;
* ``output``: the target turn, ``<think>`` reasoning then ``<tool_call>`` JSON lines and/or
  ``<response>``.

One record is one sample: the assistant turns inside ``input`` are context only (ToolRL made
each of them a record of its own).
"""

from __future__ import annotations

import json
import re
from typing import Any

from restlit.data_prep.records import (
    RecordError,
    Target,
    Trace,
    Turn,
    calls_from_parse,
    require,
    tools_or_reject,
)
from restlit.data_prep.schema import normalize_tools
from restlit.toolcalls import parse_tool_calls

SOURCE = "toolrl"

_TOOL_SECTION = re.compile(r"\*\*Available Tools\*\*(.*?)(?=\n\*\*[^*\n]+\*\*|\Z)", re.DOTALL)
_TOOL_ITEM = re.compile(r"(?m)^\d+\.\s*Name:\s*")
_BLOCK = re.compile(r"<(user|think|tool_call|obs|response)>(.*?)</\1>", re.DOTALL)
_TARGET_HEAD = re.compile(r"\s*<think>(.*?)</think>", re.DOTALL)
_TARGET_BLOCK = re.compile(r"<(tool_call|response)>(.*?)</\1>", re.DOTALL)


def matches(record: Any) -> bool:
    """True for ToolRL's ``instruction/input/output`` records or its parquet ``prompt`` rows."""
    if not isinstance(record, dict):
        return False
    if "prompt" in record and "reward_model" in record:
        return True
    instruction = record.get("instruction")
    return (isinstance(instruction, str) and "output" in record
            and "[BEGIN OF AVAILABLE TOOLS]" not in instruction
            and ("**Available Tools**" in instruction or "<think>" in str(record.get("output"))))


def _tools(instruction: str) -> tuple[list[dict], tuple[str, ...], None]:
    m = _TOOL_SECTION.search(instruction)
    if not m:
        raise ValueError("no **Available Tools** section in the instruction")
    raw_tools = []
    for chunk in _TOOL_ITEM.split(m.group(1))[1:]:
        name, sep, rest = chunk.partition("\nDescription:")
        description, sep2, params = rest.rpartition("\nParameters:")
        if not sep or not sep2:
            raise ValueError(f"tool entry {name.strip()[:40]!r} lacks Description or Parameters")
        try:
            parameters = json.loads(params.strip())
        except json.JSONDecodeError as exc:
            raise ValueError(f"parameters of tool {name.strip()!r} are not JSON ({exc.msg})") from None
        raw_tools.append({"name": name.strip(), "description": description.strip(), "parameters": parameters})
    tools, warnings = normalize_tools(raw_tools)
    return tools, warnings, None


def _assistant(blocks: dict[str, str], sample: bool) -> Turn:
    """An assistant turn from its ``think`` / ``tool_call`` / ``response`` block texts."""
    try:
        calls = []
        if "tool_call" in blocks:
            calls = calls_from_parse(parse_tool_calls(f"<tool_call>{blocks['tool_call']}</tool_call>"))
        response = blocks["response"].strip() if "response" in blocks else None
        if not calls and response is None:
            raise RecordError("empty_target", "the turn has neither a call nor a response")
        return Turn("assistant", target=Target(blocks.get("think", "").strip(), calls, response), sample=sample)
    except RecordError as exc:
        return Turn("assistant", error=exc, sample=sample)


def _history(text: str) -> list[Turn]:
    turns: list[Turn] = []
    pending: dict[str, str] = {}
    for m in _BLOCK.finditer(text):
        kind, body = m.group(1), m.group(2)
        if kind in ("user", "obs"):
            if pending:
                turns.append(_assistant(pending, sample=False))
                pending = {}
            turns.append(Turn("user" if kind == "user" else "tool", content=body.strip()))
        else:
            if kind in pending:  # a second think/tool_call/response starts a new assistant turn
                turns.append(_assistant(pending, sample=False))
                pending = {}
            pending[kind] = body
    if pending:
        turns.append(_assistant(pending, sample=False))
    if not turns:
        plain = text.replace("**Dialogue Records History**", "").strip()
        if not plain:
            raise RecordError("missing_field", "'input' holds no dialogue")
        turns.append(Turn("user", content=plain))
    return turns


def _target(output: str) -> Turn:
    head = _TARGET_HEAD.match(output)
    if not head:
        return Turn("assistant", error=RecordError("bad_target", "output does not start with <think> ... </think>"))
    rest = output[head.end():]
    found: dict[str, str] = {"think": head.group(1)}
    for m in _TARGET_BLOCK.finditer(rest):
        if m.group(1) in found:
            return Turn("assistant", error=RecordError("bad_target", f"output has two <{m.group(1)}> blocks"))
        found[m.group(1)] = m.group(2)
    leftover = _TARGET_BLOCK.sub("", rest).strip()
    if leftover:
        return Turn("assistant", error=RecordError("bad_target", f"text outside the blocks: {leftover[:60]!r}"))
    return _assistant(found, sample=True)


def read(record: Any) -> Trace:
    """One ToolRL record (either layout) -> Trace; RecordError when unusable."""
    if isinstance(record, dict) and "prompt" in record and "reward_model" in record:
        prompt = require(record, "prompt", list)
        roles = {m.get("role"): m.get("content") for m in prompt if isinstance(m, dict)}
        instruction, text = roles.get("system"), roles.get("user")
        if not isinstance(instruction, str) or not isinstance(text, str):
            raise RecordError("missing_field", "'prompt' lacks a system or a user message")
        output = require(require(record, "reward_model", dict), "ground_truth")
    else:
        instruction = require(record, "instruction")
        text = require(record, "input")
        output = require(record, "output")
    tools, warnings, _ = tools_or_reject(_tools, instruction)
    turns = _history(text)
    turns.append(_target(output))
    return Trace(tools, turns, warnings)
