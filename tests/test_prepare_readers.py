"""Readers on the real samples, decomposition of multi-turn traces, and streaming containers."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from restlit.data_prep import inputs
from restlit.data_prep.decompose import decompose
from restlit.data_prep.inputs import InputError, iter_records, sniff_container
from restlit.data_prep.readers import READERS, detect
from restlit.data_prep.records import RecordError
from restlit.prompts import NO_CALL_RESPONSE, render_target
from tests.conftest import HAMMER, TOOLACE, TOOLRL, XLAM, data_file


def _load(relative: str) -> list:
    return json.loads(data_file(relative).read_text())


@pytest.mark.parametrize(("relative", "layout"), [
    (TOOLACE, "toolace"),
    (XLAM, "xlam"),
    (TOOLRL, "toolrl"),
    (HAMMER, "hammer"),
])
def test_detect_each_real_sample(relative: str, layout: str) -> None:
    records = _load(relative)
    assert {detect(r).name for r in records} == {layout}


def test_toolace_reader_spot_check() -> None:
    record = _load(TOOLACE)[0]
    trace = READERS["toolace"].read(record)
    assert [t["name"] for t in trace.tools] == ["Search Managers", "Daily Match List-Scheduled",
                                                "Tennis Schedules Odds API", "Event Result", "Get Specific Fighter"]
    event = trace.tools[3]["parameters"]
    assert event["properties"]["evt"]["type"] == "number"  # ToolACE's "float"
    assert event["required"] == ["evt"]
    assert [t.role for t in trace.turns] == ["user", "assistant"]
    target = trace.turns[1].target
    assert (target.think, target.calls, target.response) == (
        "", [{"name": "Search Managers", "arguments": {"name": "Alex Ferguson"}}], None)


def test_toolace_multi_turn_decomposition() -> None:
    records = _load(TOOLACE)
    multi = 0
    for record in records:
        k = sum(1 for m in record["conversations"] if m["from"] == "assistant")
        items = list(decompose(READERS["toolace"].read(record)))
        assert len(items) == k  # k assistant turns -> k samples (or turn rejects)
        assert [i.turn_index for i in items] == list(range(k))
        if k == 1:
            continue
        multi += 1
        for earlier, later in itertools.pairwise(items):
            assert len(later.history) > len(earlier.history)
            assert later.history[: len(earlier.history)] == earlier.history  # history grows
        for item in items:
            # the history is every earlier turn: its assistant messages are the earlier targets
            assert sum(m["role"] == "assistant" for m in item.history) == item.turn_index
            if item.error is not None:
                break  # a turn that did not parse is missing from later histories
    assert multi == 40


def test_toolace_turn_history_includes_tool_observations() -> None:
    record = next(r for r in _load(TOOLACE) if len(r["conversations"]) == 10)
    items = list(decompose(READERS["toolace"].read(record)))
    last = items[-1]
    raw_roles = [m["from"] for m in record["conversations"]]
    assert [m["role"] for m in last.history] == raw_roles[:-1]
    tool_msgs = [m for m in last.history if m["role"] == "tool"]
    assert tool_msgs[0]["content"] == next(m["value"] for m in record["conversations"] if m["from"] == "tool")
    first_call = next(m for m in last.history if m["role"] == "assistant")
    assert first_call["content"].startswith("<think></think>\n<tool_call>\n")


def test_toolace_unparseable_turn_poisons_later_turns() -> None:
    record = {
        "system": 'tools: [{"name": "f", "description": "", "parameters": {"type": "dict", "properties": {}}}]',
        "conversations": [
            {"from": "user", "value": "a"}, {"from": "assistant", "value": "[f(x=\"unterminated)]"},
            {"from": "tool", "value": "[]"}, {"from": "assistant", "value": "done"},
        ],
    }
    items = list(decompose(READERS["toolace"].read(record)))
    assert [i.error.reason for i in items] == ["call_parse_error", "unparseable_history"]


def test_toolace_tool_name_with_parentheses() -> None:
    record = {
        "system": 'x [{"name": "Send OTP (Custom)", "description": "", "parameters": {"type": "dict", '
                  '"properties": {"otp": {"type": "string"}}, "required": ["otp"]}}]',
        "conversations": [{"from": "user", "value": "send"},
                          {"from": "assistant", "value": '[Send OTP (Custom)(otp="1234")]'}],
    }
    target = READERS["toolace"].read(record).turns[1].target
    assert target.calls == [{"name": "Send OTP (Custom)", "arguments": {"otp": "1234"}}]


def test_xlam_reader_spot_check() -> None:
    record = _load(XLAM)[0]
    trace = READERS["xlam"].read(record)
    assert trace.tools == [{
        "name": "emailvalidation",
        "description": "Validates if an email address exists using the RapidAPI Whois Lookup service.",
        "parameters": {"type": "object", "properties": {"email": {
            "type": "string", "description": "The email address to be validated.", "default": "info@peekdomain.com"}}},
    }]  # a non-empty default: not required
    assert trace.turns[0].content == "Check the existence of the email 'support@techhelp.org'."
    assert trace.turns[1].target.calls == [{"name": "emailvalidation", "arguments": {"email": "support@techhelp.org"}}]


def test_xlam_empty_answers_get_the_refusal_response() -> None:
    trace = READERS["xlam"].read({"id": 1, "query": "q", "tools": "[]", "answers": "[]"})
    assert trace.turns[1].target.response == NO_CALL_RESPONSE
    assert trace.warnings == ("no_call_response_added",)


def test_toolrl_reader_spot_check() -> None:
    records = _load(TOOLRL)
    record = records[0]
    trace = READERS["toolrl"].read(record)
    assert len(trace.tools) == 5 and trace.tools[3]["name"] == "Event Result"
    assert trace.tools[3]["parameters"]["required"] == ["evt"]  # "lang" has default "en"
    target = trace.turns[-1].target
    assert target.think.startswith("Okay, the user is asking for information about the manager Alex Ferguson.")
    assert target.calls == [{"name": "Search Managers", "arguments": {"name": "Alex Ferguson"}}]
    assert render_target(target.think, target.calls, target.response) == record["output"]


def test_toolrl_history_becomes_context_turns() -> None:
    record = next(r for r in _load(TOOLRL) if r["input"].count("<obs>") >= 3)
    trace = READERS["toolrl"].read(record)
    assert trace.n_samples == 1  # only the output is a target; history turns are other records
    items = list(decompose(trace))
    assert len(items) == 1
    history = items[0].history
    assert history[0]["role"] == "user"
    assert sum(m["role"] == "tool" for m in history) == record["input"].count("<obs>")
    assert sum(m["role"] == "user" for m in history) == record["input"].count("<user>")
    assistant = [m["content"] for m in history if m["role"] == "assistant"]
    assert all(a.startswith("<think> ") for a in assistant)


def test_toolrl_parquet_layout(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _load(TOOLRL)[:5]
    rows = [{"data_source": "rlla", "prompt": [{"role": "system", "content": r["instruction"]},
                                               {"role": "user", "content": r["input"]}],
             "ability": "tool", "reward_model": {"style": "rule", "ground_truth": r["output"]},
             "extra_info": {"split": "train", "index": i}} for i, r in enumerate(records)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert sniff_container(path) == "parquet"
    read = [raw.value for raw in iter_records(path, "parquet")]
    assert [detect(v).name for v in read] == ["toolrl"] * 5
    for raw, row in zip(records, read):
        a, b = READERS["toolrl"].read(raw), READERS["toolrl"].read(row)
        assert a.tools == b.tools and a.turns[-1].target == b.turns[-1].target


def test_hammer_reader_spot_check() -> None:
    records = _load(HAMMER)
    trace = READERS["hammer"].read(records[1])
    assert [t["name"] for t in trace.tools] == ["LxOm64zLyg", "WoDdNSe7e7K5", "CBrCNmwOERb", "1YTQVXkwLY"]
    assert trace.turns[0].content == "What are the current weather conditions in Sydney?"
    assert trace.turns[1].target.calls == [{"name": "WoDdNSe7e7K5", "arguments": {"LzZsvxUC": "Sydney"}}]
    empty = READERS["hammer"].read(records[0]).turns[1].target
    assert (empty.calls, empty.response) == ([], NO_CALL_RESPONSE)


@pytest.mark.parametrize(("layout", "record", "reason"), [
    ("xlam", {"query": "q", "tools": "[]"}, "missing_field"),
    ("xlam", {"query": "q", "tools": "[{bad", "answers": "[]"}, "tools_not_json"),
    ("xlam", {"query": 3, "tools": "[]", "answers": "[]"}, "bad_field_type"),
    ("xlam", [1, 2], "not_an_object"),
    ("toolace", {"system": "no tools here", "conversations": []}, "tools_not_json"),
    ("toolace", {"system": '[{"name": "f"}]', "conversations": [{"from": "robot", "value": "x"}]}, "bad_role"),
    ("toolrl", {"instruction": "**Available Tools**\n1. Name: f\nDescription: d\nParameters: {oops",
                "input": "<user> hi </user>", "output": "<think> x </think>\n<response> y </response>"},
     "tools_not_json"),
    ("hammer", {"instruction": "[BEGIN OF AVAILABLE TOOLS][][END OF AVAILABLE TOOLS]", "input": "", "output": "[]"},
     "missing_field"),
])
def test_bad_records_raise_with_reason(layout: str, record, reason: str) -> None:
    with pytest.raises(RecordError) as info:
        READERS[layout].read(record)
    assert info.value.reason == reason


@pytest.mark.parametrize(("layout", "record", "reason"), [
    ("xlam", {"query": "q", "tools": "[]", "answers": "not json"}, "call_parse_error"),
    ("xlam", {"query": "q", "tools": "[]", "answers": '[{"arguments": {}}]'}, "call_parse_error"),
    ("toolrl", {"instruction": "**Available Tools**\n", "input": "<user> hi </user>", "output": "no think"},
     "bad_target"),
    ("toolrl", {"instruction": "**Available Tools**\n", "input": "<user> hi </user>",
                "output": "<think> x </think>\n<tool_call>\n{\"name\": \"f\", \"parameters\": \n</tool_call>"},
     "call_parse_error"),
    ("hammer", {"instruction": "[BEGIN OF AVAILABLE TOOLS][][END OF AVAILABLE TOOLS][BEGIN OF QUERY]q[END OF QUERY]",
                "input": "", "output": "I cannot help"}, "call_parse_error"),
])
def test_bad_targets_are_turn_errors(layout: str, record: dict, reason: str) -> None:
    trace = READERS[layout].read(record)
    assert trace.turns[-1].error.reason == reason


# ---------------------------------------------------------------------------------------------
# containers


def _values(path: Path) -> list:
    return [r.value for r in iter_records(path, sniff_container(path))]


def test_json_list_jsonl_gzip_and_concatenated_agree(tmp_path: Path) -> None:
    records = _load(XLAM)
    (tmp_path / "a.json").write_text(json.dumps(records, indent=2))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in records))
    (tmp_path / "d.json").write_text("\n".join(json.dumps(r, indent=1) for r in records))
    for name in ("a.json", "b.jsonl", "c.jsonl.gz", "d.json"):
        assert _values(tmp_path / name) == records, name


def test_json_list_is_streamed_across_small_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _load(TOOLACE)[:30]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    monkeypatch.setattr(inputs, "_CHUNK", 97)  # records straddle many buffer refills
    assert _values(path) == records
    path.write_text("[1, 23456, true, null]")
    assert _values(path) == [1, 23456, True, None]


def test_jsonl_bad_line_is_a_record_with_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{oops\n{"b": 2}\n')
    got = list(iter_records(path, sniff_container(path)))
    assert [(r.index, r.line, r.error is None) for r in got] == [(0, 1, True), (1, 2, False), (2, 3, True)]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"hello world", "not JSON"),
    (b"\x00\x01\x02binary", "not JSON"),
    (b'[{"a": 1}, {"b": ', "invalid JSON in record 1"),
    (b'[{"a": 1} {"b": 2}]', "expected ',' or ']'"),
    (b'[{"a": 1}, {"b": 2}] trailing', "unexpected text after"),
    (b'{\n"a": 1,\n}', "invalid JSON in record 0"),
    (b'[{"a": "\xff\xfe"}]', "not UTF-8"),
])
def test_broken_files_raise_one_line_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        list(iter_records(path, sniff_container(path)))
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_truncated_gzip_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"a": i} for i in range(2000)]).encode())[:300])
    with pytest.raises(InputError, match="x.json.gz"):
        list(iter_records(path, sniff_container(path)))
