"""The one prompt renderer: system prompt, canonical target text, chat messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restlit.prompts import (
    build_messages,
    render_system_prompt,
    render_target,
)
from restlit.regions import Region, tag
from restlit.toolcalls import parse_tool_calls

TOOLS = [
    {"name": "Search Managers", "description": "Find a manager by name",
     "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}},
]


def test_render_target_matches_method_format() -> None:
    text = render_target("pick the tool", [{"name": "Search Managers", "arguments": {"name": "Alex Ferguson"}},
                                           {"name": "get_time", "arguments": {}}], "Here you go")
    assert text == (
        "<think> pick the tool </think>\n"
        "<tool_call>\n"
        '{"name": "Search Managers", "parameters": {"name": "Alex Ferguson"}}\n'
        '{"name": "get_time", "parameters": {}}\n'
        "</tool_call>\n"
        "<response> Here you go </response>"
    )


def test_render_target_reproduces_toolrl_output(rlla_records: list[dict]) -> None:
    # ToolRL's outputs are in the same format: rendering their parsed content gives them back
    record = rlla_records[0]
    think = record["output"].split("<think>")[1].split("</think>")[0]
    calls = [c.as_dict() for c in parse_tool_calls(record["output"]).calls]
    assert render_target(think, calls, None) == record["output"]


def test_render_target_empty_think_and_non_ascii() -> None:
    text = render_target("", [{"name": "f", "arguments": {"city": "Zürich"}}], None)
    assert text == '<think></think>\n<tool_call>\n{"name": "f", "parameters": {"city": "Zürich"}}\n</tool_call>'
    assert render_target("  ", [], "ok") == "<think></think>\n<response> ok </response>"


def test_render_target_needs_call_or_response() -> None:
    with pytest.raises(ValueError):
        render_target("x", [], None)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_names, st.dictionaries(st.text(max_size=6), _values, max_size=3)), min_size=1, max_size=3))
def test_rendered_calls_parse_back_and_are_tagged(calls: list) -> None:
    structured = [{"name": n, "arguments": a} for n, a in calls]
    text = render_target("think", structured, None)
    parsed = parse_tool_calls(text)
    assert parsed.errors == []
    assert [c.as_dict() for c in parsed.calls] == structured
    names = [text[s.start:s.end] for s in tag(text) if s.region is Region.TOOL_NAME]
    assert [json.loads(n) for n in names] == [n for n, _ in calls]


def test_system_prompt_lists_tools_as_json_schema_and_the_format() -> None:
    prompt = render_system_prompt(TOOLS)
    lines = [json.loads(line) for line in prompt.splitlines() if line.startswith('{"name": "Search')]
    assert lines == [TOOLS[0]]
    for tag_ in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<response>", "</response>"):
        assert tag_ in prompt
    assert '"parameters"' in prompt
    assert "no tools" in render_system_prompt([])


def test_build_messages_roles_and_target() -> None:
    history = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": render_target("", [{"name": "get_time", "arguments": {}}], None)},
        {"role": "tool", "content": '[{"name": "get_time", "results": "12:00"}]'},
    ]
    target = {"think": "", "calls": [], "response": "It is noon."}
    msgs = build_messages(TOOLS, history, target)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[0]["content"] == render_system_prompt(TOOLS)
    assert msgs[-1]["content"] == "<think></think>\n<response> It is noon. </response>"
    assert build_messages(TOOLS, history)[-1]["role"] == "tool"
    with pytest.raises(ValueError):
        build_messages(TOOLS, [{"role": "system", "content": "x"}])


def test_messages_go_through_a_chat_template(smollm2_tokenizer) -> None:
    history = [{"role": "user", "content": "time?"}]
    target = {"think": "", "calls": [{"name": "get_time", "arguments": {}}], "response": None}
    rendered = smollm2_tokenizer.apply_chat_template(build_messages(TOOLS, history, target), tokenize=False)
    assert render_system_prompt(TOOLS) in rendered
    assert render_target("", target["calls"], None) in rendered
