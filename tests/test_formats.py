"""Output formats (restlit.formats): rendering, regions on hand-computed cases, the format reward,
the registry and prompt rendering. Parse agreement with vLLM is in test_formats_vllm.py."""

from __future__ import annotations

import pytest

from restlit.formats import FORMAT_KEY, FORMATS, TOOLS_KEY, UnknownFormat, get_format, template_takes_tools
from restlit.regions import Region
from restlit.rewards import compute_reward, correctness_reward, format_reward

F, T, N, K, V, R, O = (Region.FORMAT, Region.THINK, Region.TOOL_NAME, Region.PARAM_NAME, Region.PARAM_VALUE,
                       Region.RESPONSE, Region.OTHER)
CALL = {"think": "", "calls": [{"name": "f", "arguments": {"a": 1}}], "response": None}
TEXT = {"think": "", "calls": [], "response": "hi"}


def pieces(fmt: str, text: str) -> list[tuple[str, Region]]:
    return [(text[a:b], r) for a, b, r in get_format(fmt).tag(text)]


def test_registry_and_unknown_name():
    assert list(FORMATS) == ["toolrl", "hermes", "llama3_json", "pythonic"]
    assert get_format().name == get_format(None).name == "toolrl"
    assert get_format(get_format("hermes")) is get_format("hermes")
    with pytest.raises(UnknownFormat, match="unknown output format 'xml'; choose one of: toolrl, hermes"):
        get_format("xml")


def test_hermes_regions_hand_computed():
    text = '<think>\nwhy\n</think>\n\nSure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    assert pieces("hermes", text) == [
        ("<think>", F), ("\nwhy\n", T), ("</think>", F), ("\n\n", O), ("Sure.", R), ("\n", O), ("<tool_call>", F),
        ('\n{"name": ', O), ('"f"', N), (', "arguments": {', O), ('"a"', K), (": ", O), ("1", V), ("}}\n", O),
        ("</tool_call>", F)]
    # free text after the calls and a stray closing tag
    assert pieces("hermes", "ok </tool_call> bye") == [("ok", R), (" ", O), ("</tool_call>", F), (" ", O), ("bye", R)]


def test_llama3_json_regions_hand_computed():
    text = '<|python_tag|>{"name": "f", "parameters": {"a": "x"}}; {"name": "g", "parameters": {}}'
    assert pieces("llama3_json", text) == [
        ("<|python_tag|>", F), ('{"name": ', O), ('"f"', N), (', "parameters": {', O), ('"a"', K), (": ", O),
        ('"x"', V), ('}}; {"name": ', O), ('"g"', N), (', "parameters": {}}', O)]
    assert pieces("llama3_json", " No tool fits. ") == [(" ", O), ("No tool fits.", R), (" ", O)]


def test_pythonic_regions_hand_computed():
    assert pieces("pythonic", '[f(a=1, b="x"), g()]') == [
        ("[", F), ("f", N), ("(", O), ("a", K), ("=", O), ("1", V), (", ", O), ("b", K), ("=", O), ('"x"', V),
        ("), ", O), ("g", N), ("()", O), ("]", F)]
    assert pieces("pythonic", "No tool fits.") == [("No tool fits.", R)]
    assert pieces("pythonic", '[f(a=') == [("[", F), ("f", N), ("(", O), ("a", K), ("=", O)]  # cut off


def test_toolrl_regions_unchanged():
    text = '<think> a </think>\n<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>'
    assert pieces("toolrl", text)[:4] == [("<think>", F), (" a ", T), ("</think>", F), ("\n", O)]


@pytest.mark.parametrize("name", ["hermes", "llama3_json", "pythonic"])
def test_rendered_references_parse_and_are_well_formed(name):
    fmt = get_format(name)
    for target in (CALL, TEXT, {"think": "t", "calls": CALL["calls"] * 2, "response": "r"}):
        text = fmt.render_target(target)
        assert fmt.format_ok(text, target) and fmt.format_ok(text), text
        assert fmt.parse(text) == target["calls"]
        assert fmt.predicted_calls(text) == (target["calls"] or None)
    with pytest.raises(ValueError, match="needs at least one call"):
        fmt.render("", [], None)


def test_hermes_format_reward_hand_computed():
    fmt = get_format("hermes")
    good = '<think>\nx\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    assert fmt.format_ok(good, CALL) and fmt.format_ok(good.split("<tool_call>")[0] + "hi", TEXT)
    assert fmt.format_ok("Let me call f.\n" + good.split("\n\n", 1)[1], CALL)  # text before calls
    assert not fmt.format_ok(good + "\nbye", CALL)  # text after the calls
    assert not fmt.format_ok(good.replace("\n</tool_call>", ""), CALL)  # unclosed
    assert not fmt.format_ok(good.replace('"arguments"', '"parameters"'), CALL)  # wrong key
    assert not fmt.format_ok(good, TEXT)  # calls where the reference has none
    assert not fmt.format_ok("hi <think>x</think>", TEXT)  # reasoning not first
    assert not fmt.format_ok("<think>\nx\n</think>", TEXT)  # no answer


def test_llama3_json_and_pythonic_format_reward_hand_computed():
    llama, py = get_format("llama3_json"), get_format("pythonic")
    assert llama.format_ok('<|python_tag|>{"name": "f", "parameters": {"a": 1}}', CALL)
    assert not llama.format_ok('Calling: {"name": "f", "parameters": {"a": 1}}', CALL)  # vLLM reads it; not clean
    assert not llama.format_ok('{"name": "f", "arguments": {"a": 1}}', CALL)  # Llama's key is "parameters"
    assert not llama.format_ok('{"name": "f", "parameters": {"a": 1}} {"name": "g", "parameters": {}}', None)
    assert not llama.format_ok("{oops", TEXT) and llama.format_ok("hi", TEXT)
    assert py.format_ok('[f(a=1)]', CALL) and py.format_ok("[f(a=1)]\n", CALL)
    assert not py.format_ok(' [f(a=1)]', CALL)  # vLLM finds no call after a leading space
    assert not py.format_ok('[f(1)]', CALL)  # positional argument, dropped by vLLM
    assert not py.format_ok('[f(a=1)] ok', CALL) and not py.format_ok('[f(a=x)]', CALL)
    assert not py.format_ok('[not a call', TEXT) and py.format_ok("hi", TEXT)


def test_reward_in_a_format_keeps_toolrls_correctness():
    hermes = get_format("hermes")
    text = hermes.render("", [{"name": "f", "arguments": {"a": 2}}], None)  # right tool, wrong value
    # ToolRL's score: names 1 + keys 1 + values 0 out of 1 + (1 + 1) = 3  ->  6 * 2/3 - 3 = 1
    assert correctness_reward(text, CALL, fmt="hermes") == pytest.approx(1.0)
    assert correctness_reward(hermes.render_target(CALL), CALL, fmt=hermes) == 3.0
    assert correctness_reward(hermes.render_target(CALL), CALL) == -3.0  # not ToolRL's format
    assert format_reward(hermes.render_target(CALL), CALL, 0, 1, "hermes") == 1.0
    r = compute_reward(get_format("pythonic").render_target(CALL), CALL, 0, fmt="pythonic")
    assert (r.format, r.correctness) == (r.bounds.format_max, r.bounds.correctness_max)


def test_history_turns_are_re_rendered_from_toolrl_text():
    hist = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": '<think> t </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n'
                                             "</tool_call>"},
            {"role": "tool", "content": "42"}, {"role": "assistant", "content": "<think></think>\n<response> ok </response>"}]
    msgs = get_format("hermes").messages([], hist)
    assert msgs[0] == {"role": "system", "content": "", TOOLS_KEY: [], FORMAT_KEY: "hermes"}
    assert msgs[2]["content"] == '<think>\nt\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    assert msgs[3] == {"role": "tool", "content": "42"} and msgs[4]["content"] == "ok"
    assert get_format("pythonic").messages([], hist)[2]["content"] == "[f(a=1)]"
    assert get_format("toolrl").messages([], hist)[2] == hist[1]


def test_prompt_uses_the_formats_template_unless_the_tokenizers_takes_tools(smollm2_tokenizer):
    tools = [{"name": "get_time", "description": "The time", "parameters": {"type": "object", "properties": {}}}]
    hermes = get_format("hermes")
    msgs = hermes.messages(tools, [{"role": "user", "content": "time?"}])
    assert not template_takes_tools(smollm2_tokenizer)
    text = hermes.prompt_text(smollm2_tokenizer, msgs)
    assert text.startswith("<|im_start|>system\n# Tools") and '"name": "get_time"' in text
    assert text.endswith("<|im_start|>user\ntime?<|im_end|>\n<|im_start|>assistant\n")

    class TakesTools:  # a tokenizer whose own template renders tools gets them through tools=
        chat_template = "{% for t in tools %}{{ t.function.name }}{% endfor %}"

        def apply_chat_template(self, messages, tools=None, chat_template=None, **kw):
            assert chat_template is None and tools[0]["function"]["name"] == "get_time"
            assert messages == [{"role": "user", "content": "time?"}]
            return "ok"

    assert hermes.prompt_text(TakesTools(), msgs) == "ok"


def test_hermes_reference_keeps_no_tag_in_its_text():
    # a reasoning that names the tag would make vLLM's parser drop the turn's calls
    text = get_format("hermes").render("put it in <tool_call> tags, then </think>", CALL["calls"], None)
    assert text.startswith("<think>\nput it in tool_call tags, then think\n</think>")
    assert get_format("hermes").parse(text) == CALL["calls"]
