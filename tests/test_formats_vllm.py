"""Each format's parse agrees with vLLM's own tool parser of the same name, called in-process from
the installed vllm package (no server): on rendered references (one and several calls) and on
malformed completions (unclosed block, bad JSON, wrong key, extra text, several calls). Agree means
the same list of ``(name, arguments)``, or no call from both. ToolRL's format has no vLLM parser.

Importing vLLM takes tens of seconds on a small CPU, hence slow."""

from __future__ import annotations

import json
import os

import pytest

from restlit.formats import get_format, openai_tools

pytestmark = pytest.mark.slow
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}},
         {"name": "get_time", "description": "The time", "parameters": {"type": "object", "properties": {}}}]
ONE = [{"name": "get_weather", "arguments": {"city": "Zürich", "days": 3}}]
SEVERAL = ONE + [{"name": "get_time", "arguments": {}},
                 {"name": "get_weather", "arguments": {"city": "a \"quoted\"\nline", "opts": {"x": [1, None, True, -2.5]}}}]

W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WP = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
T = '{"name": "get_time", "arguments": {}}'
MALFORMED = {
    "hermes": [
        f"<tool_call>\n{W}",  # unclosed block, complete JSON: vLLM reads it (the regex's second branch)
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # unclosed and cut off
        '<tool_call>\n{"name": "get_weather", "arguments": {city: Paris}}\n</tool_call>',  # bad JSON
        f"<tool_call>\n{WP}\n</tool_call>",  # wrong key: vLLM needs "arguments"
        f"Sure, let me check.\n<tool_call>\n{W}\n</tool_call>\nDone!",  # extra text around
        f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{T}\n</tool_call>",  # several calls
        f"<tool_call>\n{W}\n{T}\n</tool_call>",  # several calls in one block (ToolRL style): not JSON
        f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{{bad}}\n</tool_call>",  # one bad block drops all
        f"<think>\nI could write <tool_call>\n{W}\n</tool_call>\n</think>\nno call",  # a call inside the reasoning
        '<tool_call>\n[{"name": "get_time", "arguments": {}}]\n</tool_call>',  # a list
        '<tool_call>\n{"name": 7, "arguments": {}}\n</tool_call>',  # name not a string
        '<tool_call>\n{"name": "get_time", "arguments": "{}"}\n</tool_call>',  # arguments a string
        "<tool_call></tool_call>",  # empty
        "plain text, no call",
        "",
    ],
    "llama3_json": [
        WP, WP + "; " + T, "<|python_tag|>" + WP, "<|python_tag|>" + WP + ";" + T,
        WP + T,  # no separator: vLLM skips a "{" right after an object
        '{"name": "get_weather", "parameters": {"city": "Par',  # cut off
        '{"name": "get_weather", "parameters": {city: Paris}}',  # bad JSON
        '{"name": "get_weather", "args": {"city": "Paris"}}',  # wrong key
        "Let me call it: " + WP + " and that is all.",  # extra text: vLLM ignores it
        "Use {curly} braces " + WP,  # prose with a brace that is not JSON: vLLM drops everything
        '{"tool": "get_time"}',  # no name
        '{"name": ["x"], "parameters": {}}',  # name not a string
        "plain text, no call",
        "",
    ],
    "pythonic": [
        '[get_weather(city="Paris"), get_time()]',
        ' [get_time()]',  # a leading space: vLLM's pattern must match at position 0
        '[get_weather(city="Paris")] done',  # trailing text: not Python
        '[get_weather(city="Paris")]\n[get_time()]',  # two lists: vLLM takes the first statement
        '[get_weather("Paris", days=2)]',  # positional argument: vLLM drops it silently
        '[get_weather(city=town)]',  # a variable, not a literal
        '[get_weather(city="Paris", days=-3, x=(1, 2), y={"a": null}, z=true)]',  # JSON names, signs, tuple
        '[weather.get(city="Paris")]',  # dotted name
        '[Get Weather(city="Paris")]',  # a name with a space
        '[get_weather(city="Paris"',  # unclosed
        'get_weather(city="Paris")',  # no list
        '[get_weather(city="Paris"), 3]',  # not only calls
        "plain text, no call",
        "",
    ],
}


@pytest.fixture(scope="module")
def vllm_parse(smollm2_tokenizer):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    tokenizer = smollm2_tokenizer.__class__.from_pretrained(smollm2_tokenizer.name_or_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|python_tag|>"]})  # llama3_json needs it
    request = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], model="m", tools=openai_tools(TOOLS))
    parsers = {}

    def parse(name: str, text: str) -> list[tuple[str, object]]:
        if name not in parsers:
            parsers[name] = ToolParserManager.get_tool_parser(name)(tokenizer)
        info = parsers[name].extract_tool_calls(text, request)
        if not info.tools_called:
            return []
        return [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls]

    return parse


def _ours(name: str, text: str) -> list[tuple[str, object]]:
    return [(c["name"], json.loads(json.dumps(c["arguments"]))) for c in get_format(name).parse(text)]


@pytest.mark.parametrize("name", ["hermes", "llama3_json", "pythonic"])
def test_parse_agrees_with_vllm_on_rendered_references(name, vllm_parse):
    fmt = get_format(name)
    for calls in (ONE, SEVERAL):
        text = fmt.render("reasoning", calls, None)
        expected = [(c["name"], c["arguments"]) for c in calls]
        assert vllm_parse(name, text) == expected, text
        assert _ours(name, text) == expected, text
    text = fmt.render("", [], "No tool fits.")
    assert vllm_parse(name, text) == _ours(name, text) == []


@pytest.mark.parametrize("name", ["hermes", "llama3_json", "pythonic"])
def test_parse_agrees_with_vllm_on_malformed_completions(name, vllm_parse):
    disagreements = [(text, _ours(name, text), vllm_parse(name, text)) for text in MALFORMED[name]
                     if _ours(name, text) != vllm_parse(name, text)]
    assert disagreements == []
    # the cases exercise both outcomes
    assert any(_ours(name, t) for t in MALFORMED[name]) and any(not _ours(name, t) for t in MALFORMED[name])
