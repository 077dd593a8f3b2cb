"""The ShareGPT and OpenAI / HF chat readers, detection that never guesses, Hammer-style name
masking, the chat export round trip and duplicate inputs (issue 13)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.data_prep import readers
from restlit.data_prep.inputs import InputError
from restlit.data_prep.pipeline import prepare
from restlit.data_prep.readers import READERS, LayoutError, detect, detect_file
from restlit.data_prep.samples import Sample, load_samples
from restlit.data_prep.toolace import read as read_toolace
from restlit.prompts import render_system_prompt, render_target
from restlit.toolcalls import validate_calls
from tests.conftest import HAMMER, TOOLACE, TOOLRL, XLAM, data_file

SHAREGPT = "tests/data/layouts/sharegpt.json"
CHAT = "tests/data/layouts/chat.jsonl"
TOOL_NAMES = ["get_weather", "get_time"]


def _samples(out: Path) -> list[Sample]:
    dd = load_samples(out)
    rows = [Sample.from_row(r) for split in ("train", "validation") for r in dd[split]]
    return sorted(rows, key=lambda s: (s.input_file, s.record_index, s.turn_index))


def _content(s: Sample) -> tuple[str, str, str]:
    """What a sample is, whatever file it came from: tools, history and target (canonical JSON)."""
    return tuple(json.dumps(x, sort_keys=True) for x in (s.tools, s.history, s.target))


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def _text(think: str, calls: list[dict], response: str | None) -> str:
    return render_target(think, calls, response)


PARALLEL = [_call("get_weather", city="Paris"), _call("get_weather", city="Oslo"), _call("get_time", city="Paris")]
BERLIN = [_call("get_weather", city="Berlin", unit="c")]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("layouts") / "out"
    manifest = prepare([data_file(SHAREGPT), data_file(CHAT)], out, val_fraction=0.0)
    return out, manifest


# ---------------------------------------------------------------------------------------------
# ShareGPT / LLaMA-Factory


def test_sharegpt_multi_turn_record(layouts) -> None:
    out, _ = layouts
    samples = [s for s in _samples(out) if s.source == "sharegpt" and s.record_index == 0]
    assert [s.turn_index for s in samples] == [0, 1, 2, 3, 4]
    assert all([t["name"] for t in s.tools] == TOOL_NAMES for s in samples)
    assert samples[0].history == [{"role": "user", "content": samples[0].history[0]["content"]}]
    assert samples[0].target == {"think": "", "calls": PARALLEL, "response": None}  # parallel calls
    assert samples[1].target == {"think": "", "calls": [], "response": "Paris: 18 °C at 14:02. Oslo: 9 °C."}
    assert [m["role"] for m in samples[1].history] == ["user", "assistant", "tool"]
    assert samples[1].history[1]["content"] == _text("", PARALLEL, None)
    assert samples[1].history[2]["content"].startswith('[{"city": "Paris", "temp": 18}')  # the observation
    assert samples[2].target == {"think": "9 °C is 48.2 °F; no call needed.", "calls": [],
                                 "response": "Oslo is about 48 °F."}  # a <think> turn
    assert samples[3].target == {"think": "", "calls": BERLIN, "response": None}  # arguments as a JSON string
    assert samples[4].history[-4]["content"] == samples[2].target_text
    assert [m["role"] for m in samples[4].history] == ["user", "assistant", "tool", "assistant", "user",
                                                       "assistant", "user", "assistant", "tool"]
    assert samples[4].target["response"] == "Berlin: 15 °C."


def test_sharegpt_tools_in_system_and_role_variants(layouts) -> None:
    out, _ = layouts
    samples = [s for s in _samples(out) if s.source == "sharegpt" and s.record_index == 1]
    assert [t["name"] for t in samples[0].tools] == TOOL_NAMES  # "tools": "[]", the list in a system turn
    assert samples[0].target["calls"] == [_call("get_time", city="Rome")]
    assert [m["role"] for m in samples[1].history] == ["user", "assistant", "tool"]
    assert samples[1].target["response"] == "It is 09:30 in Rome."


def test_sharegpt_bad_records_rejected_with_reasons(layouts) -> None:
    out, manifest = layouts
    counts = manifest.sources["sharegpt"]
    assert counts.to_dict()["rejected"] == {"bad_role": 1, "call_parse_error": 1, "missing_required": 1,
                                            "tools_not_json": 1, "unknown_tool": 1, "unparseable_history": 1}
    assert counts.unknown_roles == {"function": 1}
    rejects = [(r["record_index"], r["turn_index"], r["reason"]) for r in _rejects(out) if "sharegpt" in r["file"]]
    assert rejects == [(2, 1, "call_parse_error"), (2, 2, "unparseable_history"), (3, None, "bad_role"),
                       (4, 0, "unknown_tool"), (4, 1, "missing_required"), (5, None, "tools_not_json")]
    (kept,) = [s for s in _samples(out) if s.source == "sharegpt" and s.record_index == 2]
    assert kept.turn_index == 0 and kept.target["response"] == "Let me check."
    assert (counts.records_read, counts.samples_written, counts.turns) == (6, 8, 12)
    assert counts.reconciles()


# ---------------------------------------------------------------------------------------------
# OpenAI / Hugging Face chat


def test_chat_multi_turn_record(layouts) -> None:
    out, _ = layouts
    samples = [s for s in _samples(out) if s.source == "chat" and s.record_index == 0]
    assert [s.turn_index for s in samples] == [0, 1, 2, 3, 4]
    assert all([t["name"] for t in s.tools] == TOOL_NAMES for s in samples)
    assert samples[0].target == {"think": "", "calls": PARALLEL, "response": None}  # JSON-string arguments
    assert [m["role"] for m in samples[1].history] == ["user", "assistant", "tool", "tool", "tool"]
    assert samples[1].history[2]["content"] == '{"city": "Paris", "temp": 18}'
    assert samples[1].target["response"] == "Paris: 18 °C at 14:02. Oslo: 9 °C."
    assert samples[2].target == {"think": "9 °C is 48.2 °F; no call needed.", "calls": [],
                                 "response": "Oslo is about 48 °F."}
    assert samples[3].target == {"think": "Berlin, Celsius: one call.", "calls": BERLIN, "response": None}
    assert samples[4].target["response"] == "Berlin: 15 °C."  # content as a list of text parts
    assert samples[4].history[-2]["content"] == samples[3].target_text


def test_chat_hf_style_record(layouts) -> None:
    out, _ = layouts
    samples = [s for s in _samples(out) if s.source == "chat" and s.record_index == 1]
    assert samples[0].target == {"think": "", "calls": [_call("get_time", city="Rome")], "response": None}
    assert samples[1].history[2] == {"role": "tool", "content": '{"city": "Rome", "time": "09:30"}'}


def test_chat_bad_records_rejected_with_reasons(layouts) -> None:
    out, manifest = layouts
    counts = manifest.sources["chat"]
    assert counts.to_dict()["rejected"] == {"bad_role": 1, "call_parse_error": 1, "empty_target": 1,
                                            "tools_not_json": 1, "unparseable_history": 1}
    assert counts.unknown_roles == {"function": 1}
    rejects = [(r["record_index"], r["turn_index"], r["reason"]) for r in _rejects(out) if "chat" in r["file"]]
    assert rejects == [(2, 0, "call_parse_error"), (2, 1, "unparseable_history"), (3, None, "bad_role"),
                       (4, 0, "empty_target"), (5, None, "tools_not_json")]
    assert (counts.records_read, counts.samples_written, counts.turns) == (6, 7, 10)
    assert counts.reconciles()


@pytest.mark.parametrize(("message", "reason"), [
    ({"role": "assistant", "content": "<think> never closed"}, "bad_target"),
    ({"role": "assistant", "content": "<response>a</response> stray"}, "bad_target"),
    ({"role": "assistant", "content": "<tool_call>\n{broken\n</tool_call>"}, "call_parse_error"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]},
     "call_parse_error"),
    ({"role": "assistant", "tool_calls": "get_time"}, "call_parse_error"),
])
def test_chat_bad_assistant_turns(message: dict, reason: str) -> None:
    trace = READERS["chat"].read({"messages": [{"role": "user", "content": "q"}, message], "tools": []})
    assert trace.turns[1].error is not None and trace.turns[1].error.reason == reason


def test_chat_canonical_and_hermes_content() -> None:
    content = '<think> plan </think>\n<tool_call>\n{"name": "get_time", "arguments": {"city": "Rome"}}\n</tool_call>'
    trace = READERS["chat"].read({"messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": content}], "tools": []})
    target = trace.turns[1].target
    assert (target.think, target.calls, target.response) == ("plan", [_call("get_time", city="Rome")], None)


# ---------------------------------------------------------------------------------------------
# detection never guesses


def _toolace_as_sharegpt(record: dict) -> dict:
    """A ToolACE record converted to LLaMA-Factory's ShareGPT layout, the way dataset forks do it."""
    system = record["system"]
    start = system.index("[{")
    tools, _ = json.JSONDecoder().raw_decode(system, start)
    conversations = []
    for msg in record["conversations"]:
        if msg["from"] == "user":
            conversations.append({"from": "human", "value": msg["value"]})
        elif msg["from"] == "tool":
            conversations.append({"from": "observation", "value": msg["value"]})
        else:
            turn = read_toolace({"system": system, "conversations": [msg]}).turns[0]
            if turn.target is not None and turn.target.calls:
                conversations.append({"from": "function_call", "value": json.dumps(turn.target.calls)})
            elif turn.target is not None:
                conversations.append({"from": "gpt", "value": msg["value"]})
            else:  # a call string that does not parse: kept as it is
                conversations.append({"from": "function_call", "value": msg["value"]})
    return {"conversations": conversations, "system": system[:start], "tools": json.dumps(tools)}


@pytest.fixture(scope="module")
def toolace_sharegpt(tmp_path_factory) -> Path:
    records = json.loads(data_file(TOOLACE).read_text())
    path = tmp_path_factory.mktemp("conv") / "toolace_sharegpt.json"
    path.write_text(json.dumps([_toolace_as_sharegpt(r) for r in records]))
    return path


def test_sharegpt_conversion_of_toolace_is_never_toolace(toolace_sharegpt: Path, tmp_path: Path) -> None:
    records = json.loads(toolace_sharegpt.read_text())
    assert {detect(r).name for r in records} == {"sharegpt"}
    assert not any(READERS["toolace"].matches(r) for r in records)
    converted = prepare([toolace_sharegpt], tmp_path / "conv", val_fraction=0.0)
    assert converted.inputs[0].format == "sharegpt"
    original = prepare([data_file(TOOLACE)], tmp_path / "orig", val_fraction=0.0)
    # the same dialogues give the same samples, whichever layout carries them
    assert converted.totals.samples_written == original.totals.samples_written == 196
    assert sorted(map(_content, _samples(tmp_path / "conv"))) == sorted(map(_content, _samples(tmp_path / "orig")))


def test_forced_wrong_layout_warns_in_one_line(toolace_sharegpt: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["prepare", str(toolace_sharegpt), "-o", str(tmp_path / "o"), "--format",
                                   "toolace"])
    assert res.exit_code == 0, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("warning:")]
    assert line == (f"warning: {toolace_sharegpt}: 186 of 186 turns and records rejected as bad_role "
                    "(unknown roles: human 186, function_call 165, gpt 59, observation 37)")
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["warnings"] == [line.removeprefix("warning: ")]
    # records naming each role: every one has a human turn, 165 a call, 59 a text answer
    assert manifest["totals"]["unknown_roles"] == {"function_call": 165, "gpt": 59, "human": 186,
                                                   "observation": 37}


def test_file_whose_records_fit_different_layouts_is_refused(tmp_path: Path) -> None:
    mixed = json.loads(data_file(TOOLACE).read_text())[:2] + json.loads(data_file(XLAM).read_text())[:2]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(mixed))
    res = CliRunner().invoke(app, ["prepare", str(path), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "fit different layouts (toolace at record 0, xlam at record 2)" in res.output
    assert not (tmp_path / "o").exists()


def test_record_that_fits_two_layouts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    greedy = readers.Reader("greedy", lambda r: True, READERS["xlam"].read)
    monkeypatch.setitem(readers.READERS, "greedy", greedy)
    record = json.loads(data_file(XLAM).read_text())[0]
    with pytest.raises(LayoutError, match=r"record 0 fits two layouts \(xlam, greedy\)"):
        detect_file([(0, record)])
    assert detect(record) is None


def test_records_of_no_layout_beside_known_ones_are_rejected_not_refused(tmp_path: Path) -> None:
    records = [{"conversations": [{"from": "narrator", "value": "x"}], "tools": "[]"}]
    records += json.loads(data_file(SHAREGPT).read_text())[:1]
    path = tmp_path / "f.json"
    path.write_text(json.dumps(records))
    manifest = prepare([path], tmp_path / "o")
    assert manifest.inputs[0].format == "sharegpt"
    assert manifest.totals.rejected == {"bad_role": 1} and manifest.totals.unknown_roles == {"narrator": 1}


def test_every_real_sample_is_claimed_by_exactly_one_reader() -> None:
    for relative in (TOOLACE, XLAM, TOOLRL, HAMMER, SHAREGPT):
        for record in json.loads(data_file(relative).read_text()):
            assert len(readers.matching(record)) <= 1


# ---------------------------------------------------------------------------------------------
# Hammer-style name masking


def _masked_run(tmp_path: Path, name: str, fraction: float, seed: int, inputs=(XLAM, TOOLACE)):
    out = tmp_path / name
    manifest = prepare([data_file(f) for f in inputs], out, mask_names=fraction, mask_seed=seed, val_fraction=0.0)
    return manifest, _samples(out)


def test_masking_replaces_names_consistently_and_validates(tmp_path: Path) -> None:
    plain, plain_samples = _masked_run(tmp_path, "plain", 0.0, 0)
    masked, samples = _masked_run(tmp_path, "masked", 1.0, 0)
    # masked samples validate like any other: the same turns are kept and rejected
    assert masked.totals.samples_written == plain.totals.samples_written
    assert masked.totals.rejected == plain.totals.rejected
    assert masked.totals.masked == masked.totals.samples_written and plain.totals.masked == 0
    for s, p in zip(samples, plain_samples, strict=True):
        assert (s.record_index, s.turn_index, s.input_file) == (p.record_index, p.turn_index, p.input_file)
        names = {t["name"]: t for t in s.tools}
        assert not set(names) & {t["name"] for t in p.tools}  # every tool name replaced
        assert [t["description"] for t in s.tools] == [t["description"] for t in p.tools]  # descriptions stay
        for mt, pt in zip(s.tools, p.tools, strict=True):
            mprops, pprops = mt["parameters"]["properties"], pt["parameters"]["properties"]
            assert len(mprops) == len(pprops) and not set(mprops) & set(pprops)  # every parameter name
            assert [m["description"] for m in mprops.values() if "description" in m] == \
                [q["description"] for q in pprops.values() if "description" in q]
        assert validate_calls(s.target["calls"], s.tools) == []
        for call, orig in zip(s.target["calls"], p.target["calls"], strict=True):
            assert set(call["arguments"]) <= set(names[call["name"]]["parameters"]["properties"])
            assert list(call["arguments"].values()) == list(orig["arguments"].values())  # values stay
        # the history's calls use the masked names too
        for old in {t["name"] for t in p.tools}:
            assert not any(f'"name": "{old}"' in m["content"] for m in s.history)
        assert s.target_text == render_target(s.target["think"], s.target["calls"], s.target["response"])


def test_masking_multi_turn_history(tmp_path: Path) -> None:
    _, samples = _masked_run(tmp_path, "m", 1.0, 0, inputs=(TOOLACE,))
    _, plain = _masked_run(tmp_path, "p", 0.0, 0, inputs=(TOOLACE,))
    (last,) = [s for s in samples if s.record_index == 7 and s.turn_index == 5]
    (orig,) = [s for s in plain if s.record_index == 7 and s.turn_index == 5]
    by_old = {o["name"]: m["name"] for o, m in zip(orig.tools, last.tools)}
    for m_msg, o_msg in zip(last.history, orig.history, strict=True):
        assert m_msg["role"] == o_msg["role"]
        if m_msg["role"] == "assistant" and "<tool_call>" in o_msg["content"]:
            m_calls = [json.loads(x) for x in m_msg["content"].splitlines() if x.startswith("{")]
            o_calls = [json.loads(x) for x in o_msg["content"].splitlines() if x.startswith("{")]
            assert [by_old[c["name"]] for c in o_calls] == [c["name"] for c in m_calls]
            assert [list(c["parameters"].values()) for c in o_calls] == \
                [list(c["parameters"].values()) for c in m_calls]
        elif m_msg["role"] == "tool":  # ToolACE's observations name their tool: renamed too
            obs = json.loads(m_msg["content"])
            assert [by_old[o["name"]] for o in json.loads(o_msg["content"])] == [o["name"] for o in obs]
        else:
            assert m_msg == o_msg


def test_masking_is_deterministic_per_seed_and_partial(tmp_path: Path) -> None:
    a, sa = _masked_run(tmp_path, "a", 0.5, 1, inputs=(XLAM,))
    _, sb = _masked_run(tmp_path, "b", 0.5, 1, inputs=(XLAM,))
    _, sc = _masked_run(tmp_path, "c", 0.5, 2, inputs=(XLAM,))
    assert list(map(_content, sa)) == list(map(_content, sb))
    assert list(map(_content, sa)) != list(map(_content, sc))
    assert 0.3 < a.totals.masked / a.totals.samples_written < 0.7
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["totals"]["masked"] == a.totals.masked


def test_mask_names_out_of_range(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["prepare", str(data_file(XLAM)), "-o", str(tmp_path / "o"), "--mask-names", "2"])
    assert res.exit_code == 2 and "--mask-names 2.0: expected a fraction in [0, 1]" in res.output


# ---------------------------------------------------------------------------------------------
# chat export


@pytest.mark.parametrize("mask", [0.0, 0.5])
def test_chat_export_round_trips(tmp_path: Path, mask: float) -> None:
    inputs = [data_file(f) for f in (TOOLACE, XLAM, TOOLRL, HAMMER, SHAREGPT, CHAT)]
    export = tmp_path / "chat.jsonl"
    first = prepare(inputs, tmp_path / "a", export_chat=export, mask_names=mask)
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(lines) == first.totals.samples_written
    again = prepare([export], tmp_path / "b")
    assert again.inputs[0].format == "chat"
    assert again.totals.samples_written == first.totals.samples_written and again.totals.rejected == {}
    assert sorted(map(_content, _samples(tmp_path / "b"))) == sorted(map(_content, _samples(tmp_path / "a")))


def test_chat_export_layout(tmp_path: Path) -> None:
    export = tmp_path / "chat.jsonl"
    prepare([data_file(SHAREGPT)], tmp_path / "a", export_chat=export, val_fraction=0.0)
    by_id = {r["id"]: r for r in map(json.loads, export.read_text().splitlines())}
    s = next(x for x in _samples(tmp_path / "a") if x.record_index == 0 and x.turn_index == 2)
    record = by_id[s.id]
    assert record["tools"] == [{"type": "function", "function": t} for t in s.tools]
    messages = record["messages"]
    assert messages[0] == {"role": "system", "content": render_system_prompt(s.tools)}
    assert messages[-1] == {"role": "assistant", "content": "<think> 9 °C is 48.2 °F; no call needed. </think>\n"
                                                            "Oslo is about 48 °F."}
    assert messages[2] == {"role": "assistant", "content": "", "weight": 0, "tool_calls": [
        {"type": "function", "function": c} for c in PARALLEL]}
    assert [m["role"] for m in messages] == ["system", *[m["role"] for m in s.history], "assistant"]


def test_chat_export_never_overwrites_without_the_flag(tmp_path: Path) -> None:
    export = tmp_path / "mine.jsonl"
    export.write_text("my own file\n")
    res = CliRunner().invoke(app, ["prepare", str(data_file(XLAM)), "-o", str(tmp_path / "o"),
                                   "--export-chat", str(export)])
    assert res.exit_code == 2 and "already exists" in res.output and res.output.count("\n") == 1
    assert export.read_text() == "my own file\n" and not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["prepare", str(data_file(XLAM)), "-o", str(tmp_path / "o"),
                                   "--export-chat", str(export), "--overwrite"])
    assert res.exit_code == 0 and len(export.read_text().splitlines()) == 139


# ---------------------------------------------------------------------------------------------
# the same content under two names


def test_duplicate_inputs_are_read_once(tmp_path: Path) -> None:
    copy = tmp_path / "copy_of_xlam.json"
    shutil.copy(data_file(XLAM), copy)
    manifest = prepare([data_file(XLAM), copy], tmp_path / "o")
    ids = [s.id for s in _samples(tmp_path / "o")]
    assert len(ids) == len(set(ids)) == 139
    data = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert data["duplicate_inputs"] == 1
    assert data["inputs"][1]["duplicate_of"] == str(data_file(XLAM)) and "duplicate_of" not in data["inputs"][0]
    assert data["inputs"][1]["counts"]["records_read"] == 0
    assert manifest.totals.reconciles() and data["totals"]["records_read"] == 152


def test_input_given_twice_under_one_name_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="given twice"):
        prepare([data_file(XLAM), data_file(XLAM)], tmp_path / "o")



def test_the_config_accepts_every_layout() -> None:
    import typing

    from restlit.config import DataConfig

    assert set(typing.get_args(typing.get_type_hints(DataConfig)["format"])) == set(readers.FORMATS)
