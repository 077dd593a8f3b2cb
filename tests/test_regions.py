"""restlit.regions: tagging, blocks and token mapping (parsing and validating calls: test_toolcalls.py)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restlit.regions import (
    PRIORITY,
    Region,
    Span,
    blocks,
    tag,
    token_regions,
)
from restlit.toolcalls import parse_tool_calls
from tests.conftest import FIXTURES, REPO, TOOLRL, data_file

R = Region


def regions_of(text: str, region: Region) -> list[str]:
    return [text[s:e] for s, e, r in tag(text) if r is region]


def assert_partition(text: str, spans: list[Span]) -> None:
    pos = 0
    for s, e, r in spans:
        assert s == pos and e > s, (pos, s, e)
        assert isinstance(r, Region)
        pos = e
    assert pos == len(text)


def reference_calls(output: str) -> list[dict]:
    """The calls of a canonical reference output, read with json.loads line by line (not with the
    code under test)."""
    m = re.search(r"<tool_call>(.*?)</tool_call>", output.split("</think>", 1)[-1], re.DOTALL)
    if not m:
        return []
    return [json.loads(line) for line in m.group(1).splitlines() if line.strip()]


# ---------------------------------------------------------------- hand-made cases


def test_canonical_regions_exactly():
    text = (
        '<think> plan </think>\n<tool_call>\n{"name": "Get Weather", "parameters": {"city": "Paris", '
        '"days": [1, {"x": null}]}}\n{"name": "b", "arguments": {"k": 2}}\n</tool_call>\n'
        "<response> done </response>"
    )
    spans = tag(text)
    assert_partition(text, spans)
    assert regions_of(text, R.FORMAT) == [
        "<think>", "</think>", "<tool_call>", "</tool_call>", "<response>", "</response>"
    ]
    assert regions_of(text, R.THINK) == [" plan "]
    assert regions_of(text, R.TOOL_NAME) == ['"Get Weather"', '"b"']
    assert regions_of(text, R.PARAM_NAME) == ['"city"', '"days"', '"k"']
    assert regions_of(text, R.PARAM_VALUE) == ['"Paris"', '[1, {"x": null}]', "2"]
    assert regions_of(text, R.RESPONSE) == [" done "]
    other = "".join(regions_of(text, R.OTHER))
    assert '"name": ' in other and '"parameters": {' in other and "}}" in other


def test_tags_inside_closed_think_are_think_text():
    text = "<think> use the <tool_call> tags and </response> </think><response>hi</response>"
    assert regions_of(text, R.THINK) == [" use the <tool_call> tags and </response> "]
    assert regions_of(text, R.FORMAT) == ["<think>", "</think><response>", "</response>"]


def test_unclosed_think_ends_at_next_block():
    text = '<think> reasoning\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>'
    bl = blocks(text)
    assert [(b.kind, b.closed) for b in bl] == [("think", False), ("tool_call", True)]
    assert regions_of(text, R.THINK) == [" reasoning\n"]
    assert regions_of(text, R.TOOL_NAME) == ['"f"']


def test_truncated_call_keeps_partial_regions():
    text = '<think>x</think>\n<tool_call>\n{"name": "f", "parameters": {"city": "Par'
    assert regions_of(text, R.TOOL_NAME) == ['"f"']
    assert regions_of(text, R.PARAM_NAME) == ['"city"']
    assert regions_of(text, R.PARAM_VALUE) == ['"Par']
    cut_in_name = '<tool_call>\n{"name": "Get Wea'
    assert regions_of(cut_in_name, R.TOOL_NAME) == ['"Get Wea']


def test_stray_and_duplicated_tags():
    text = "</think> a <response>x</response><response>y</response> </tool_call>"
    assert regions_of(text, R.FORMAT) == ["</think>", "<response>", "</response><response>", "</response>", "</tool_call>"]
    assert regions_of(text, R.RESPONSE) == ["x", "y"]


def test_invalid_json_line_recovers_on_next_line():
    text = '<tool_call>\n{"name": "f", "parameters": {"a" 1}}\nnot json at all\n{"name": "g", "parameters": {"b": 2}}\n</tool_call>'
    assert regions_of(text, R.TOOL_NAME) == ['"f"', '"g"']
    assert regions_of(text, R.PARAM_VALUE) == ["2"]
    result = parse_tool_calls(text)
    assert [c.name for c in result.calls] == ["g"]
    assert len(result.errors) == 2 and result.errors[0].startswith("line 2:") and "line 3" in result.errors[1]


def test_python_call_regions():
    text = '<tool_call>[Tool Name(a="x", b=2), f(c=[1, 2])]</tool_call>'
    assert regions_of(text, R.TOOL_NAME) == ["Tool Name", "f"]
    assert regions_of(text, R.PARAM_NAME) == ["a", "b", "c"]
    assert regions_of(text, R.PARAM_VALUE) == ['"x"', "2", "[1, 2]"]


def test_empty_and_plain_text():
    assert tag("") == []
    assert tag("hello") == [Span(0, 5, R.OTHER)]


# ---------------------------------------------------------------- real data


def test_every_real_reference_name_key_and_value_is_tagged_exactly(rlla_records):
    checked = 0
    for rec in rlla_records:
        out = rec["output"]
        calls = reference_calls(out)
        spans = tag(out)
        assert_partition(out, spans)
        names = [json.loads(out[s:e]) for s, e, r in spans if r is R.TOOL_NAME]
        keys = [json.loads(out[s:e]) for s, e, r in spans if r is R.PARAM_NAME]
        values = [json.loads(out[s:e]) for s, e, r in spans if r is R.PARAM_VALUE]
        assert names == [c["name"] for c in calls]
        assert keys == [k for c in calls for k in c["parameters"]]
        assert values == [v for c in calls for v in c["parameters"].values()]
        checked += len(calls)
    assert checked > 400  # the sample holds more calls than records


# ---------------------------------------------------------------- robustness (hypothesis)

EDIT_ALPHABET = st.sampled_from(list('{}[]()",:= \n<>/_abc\\') + ["<think>", "</think>", "<tool_call>", "</tool_call>", "<response>", "</response>", '"name": ', '"parameters": {', "'"])


def _sample_outputs() -> list[str]:
    records = json.loads(data_file(TOOLRL).read_text())
    chosen = [r["output"] for r in records[::7]]
    return [o[-1500:] if len(o) > 1500 else o for o in chosen]  # keep the tool-call end, bound the size


SAMPLES = _sample_outputs()


@st.composite
def mutated_outputs(draw):
    text = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["truncate", "insert", "delete"]))
        pos = draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:pos]
        elif op == "insert":
            text = text[:pos] + draw(EDIT_ALPHABET) + text[pos:]
        else:
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_outputs())
def test_mutated_outputs_never_raise_and_partition(text):
    spans = tag(text)
    assert_partition(text, spans)
    for a, b in itertools.pairwise(spans):
        assert a.region is not b.region  # merged
    result = parse_tool_calls(text)
    assert all(isinstance(e, str) for e in result.errors)
    for call in result.calls:
        assert 0 <= call.start < call.end <= len(text)
    offsets = [(i, min(i + 3, len(text))) for i in range(0, len(text), 3)] + [(0, 0)]
    assert len(token_regions(text, offsets, spans)) == len(offsets)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('{}[]()",:=\' \n\\ab1') + ["<tool_call>", "</tool_call>", "<think>"]), max_size=120))
def test_arbitrary_bracket_soup_never_raises(pieces):
    text = "".join(pieces)
    assert_partition(text, tag(text))
    parse_tool_calls(text)
    parse_tool_calls("<tool_call>" + text)


def test_deep_nesting_does_not_recurse_forever():
    text = "<tool_call>" + '{"name": "f", "parameters": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    assert_partition(text, tag(text))
    parse_tool_calls(text)


# ---------------------------------------------------------------- token_regions


def test_token_priority_and_special_tokens():
    text = '{"name": "ab", "parameters": {"k": "v"}}'
    spans = tag("<tool_call>" + text)
    shift = len("<tool_call>")
    full = "<tool_call>" + text
    name_at = full.index('"ab"')
    # one token covering the end of the name and the following punctuation takes TOOL_NAME
    offsets = [(0, shift), (name_at - 1, name_at + 2), (name_at + 2, name_at + 6), (5, 5), (len(full), len(full) + 4)]
    assert token_regions(full, offsets, spans) == [R.FORMAT, R.TOOL_NAME, R.TOOL_NAME, R.FORMAT, R.OTHER]
    # a token straddling a key's closing quote and the value's opening quote: PARAM_NAME wins
    k_end = full.index('"k"') + 3
    assert token_regions(full, [(k_end - 1, k_end + 3)], spans) == [R.PARAM_NAME]
    assert PRIORITY[0] is R.TOOL_NAME and PRIORITY[-1] is R.OTHER


def test_tokenizer_offsets_lose_no_name_or_value_character(rlla_records, smollm2_tokenizer):
    """With the real SmolLM2 tokenizer, every character of a TOOL_NAME / PARAM_NAME / PARAM_VALUE
    span lies in a token of that region (the released code dropped the last token of each span)."""
    rank = {r: i for i, r in enumerate(PRIORITY)}
    strict = 0
    for rec in rlla_records:
        out = rec["output"]
        spans = tag(out)
        offsets = smollm2_tokenizer(out, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
        regions = token_regions(out, offsets, spans)
        char_token_region: list[Region | None] = [None] * len(out)
        for (a, b), r in zip(offsets, regions):
            for i in range(a, b):
                char_token_region[i] = r
        for s, e, r in spans:
            if r not in (R.TOOL_NAME, R.PARAM_NAME, R.PARAM_VALUE):
                continue
            for i in range(s, e):
                got = char_token_region[i]
                # never a lower-priority region; in practice exactly the region (counted below)
                assert got is not None and rank[got] <= rank[r], (out[s:e], i, got)
                strict += got is r
    total = sum(e - s for rec in rlla_records for s, e, r in tag(rec["output"]) if r in (R.TOOL_NAME, R.PARAM_NAME, R.PARAM_VALUE))
    assert strict == total



# ---------------------------------------------------------------- packaging and CLI


def test_regions_and_toolcalls_import_without_torch_or_transformers():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'numpy'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from restlit.regions import tag\n"
        "from restlit.toolcalls import parse_tool_calls, validate_calls\n"
        "assert parse_tool_calls('[f(a=1)]').calls[0].arguments == {'a': 1}\n"
        "print(len(tag('<think>a</think>')), validate_calls([{'name': 'x', 'arguments': {}}], []))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 [Violation(")


def test_cli_tag_colours_and_errors(tmp_path):
    from typer.testing import CliRunner

    from restlit.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["tag", "--file", str(FIXTURES / "completion_two_calls.txt")])
    assert res.exit_code == 0, res.output
    assert "TOOL_NAME" in res.output and "characters:" in res.output
    res = runner.invoke(app, ["tag", "--file", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "missing.txt" in res.output
    res = runner.invoke(app, ["tag", '<think>a</think>\\n<tool_call>\\n{"name": "f", "parameters": {}}\\n</tool_call>'])
    assert res.exit_code == 0 and "TOOL_NAME 3" in res.output


def test_cli_tag_token_table(smollm2_tokenizer):
    from typer.testing import CliRunner

    from restlit.cli.main import app

    res = CliRunner().invoke(app, ["tag", "--file", str(FIXTURES / "completion_truncated.txt"), "--tokenizer", "smollm2-135m"])
    assert res.exit_code == 0, res.output
    assert "PARAM_VALUE" in res.output and "tokens" in res.output
    res = CliRunner().invoke(app, ["tag", "x", "--tokenizer", "/no/such/dir"])
    assert res.exit_code == 2 and "neither a directory nor a known alias" in res.output
