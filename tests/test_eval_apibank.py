"""API-Bank levels 1-3: the shipped files, the soft-match protocol, both prompts, and the CLI."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.evaluation import apibank as ab
from restlit.evaluation import run

runner = CliRunner()


@pytest.fixture(scope="module")
def levels() -> dict[str, list[ab.APIBankItem]]:
    return {lv: ab.load_level(lv) for lv in ab.LEVELS}


def test_the_files_ship_with_the_package_and_load_with_their_counts(levels):
    assert {lv: len(v) for lv, v in levels.items()} == {"level-1": 399, "level-2": 67, "level-3": 131}
    assert [it.id for it in levels["level-2"][:2]] == ["level-2-0", "level-2-1"]
    data = resources.files("restlit.evaluation") / "data" / "api-bank"
    for name in ("LICENSE", "README.md", *(f"{lv}-api_processed.json" for lv in ab.LEVELS)):
        assert (data / name).is_file(), name
    assert all(isinstance(it.answer["parameters"], dict) and it.answer["name"] for v in levels.values() for it in v)
    with pytest.raises(ValueError, match="unknown API-Bank level"):
        ab.load_level("level-4")


def test_references_pass_and_changed_values_or_types_fail(levels):
    for items in levels.values():
        assert all(ab.score_output(it, ab.reference_output(it)).passed for it in items)
    it = levels["level-1"][0]
    assert it.answer == {"name": "ModifyRegistration", "parameters": {
        "appointment_id": "34567890", "new_appointment_date": "2023-03-26", "new_appointment_doctor": "Dr. Lee"}}

    def out(name, params, extra=()):
        from restlit.prompts import render_target

        return render_target("t", [*extra, {"name": name, "arguments": params}], None)

    params = dict(it.answer["parameters"])
    assert ab.score_output(it, out(it.answer["name"], params, [{"name": "Other", "arguments": {}}])).passed
    v = ab.score_output(it, out(it.answer["name"], {**params, "new_appointment_doctor": "Dr. Kim"}))
    assert not v.passed and "parameters" in v.reason
    assert not ab.score_output(it, out(it.answer["name"], {**params, "appointment_id": 34567890})).passed  # a type
    assert not ab.score_output(it, out(it.answer["name"], {**params, "extra": 1})).passed
    assert not ab.score_output(it, out("QueryHealthData", params)).passed
    assert ab.score_output(it, "no block at all").reason == "no <tool_call> block in the output"
    # only the last block counts
    two = out(it.answer["name"], params) + "\n" + out("QueryHealthData", {})
    assert not ab.score_output(it, two).passed
    assert ab.score_output(it, out("QueryHealthData", {}) + "\n" + out(it.answer["name"], params)).passed
    # JSON types: true is not 1, a number is a number
    typed = ab.APIBankItem("x", "", "", {"name": "f", "parameters": {"a": True, "b": 2}})
    assert ab.score_output(typed, out("f", {"a": True, "b": 2.0})).passed
    assert not ab.score_output(typed, out("f", {"a": 1, "b": 2})).passed


def test_both_prompts_list_the_same_tools(levels):
    for items in levels.values():
        for it in items[:30]:
            native = ab.messages(it, "native")
            assert native == [{"role": "system", "content": it.system}, {"role": "user", "content": it.user}]
            mine = ab.messages(it, "restlit")
            assert mine[1] == native[1] and mine[0]["content"] != it.system
            tools = ab.tools_of(it)
            assert tools and all(f'"name": "{t["name"]}"' in mine[0]["content"] for t in tools)
            assert all(t["name"] in it.system for t in tools)
    with pytest.raises(ValueError, match="unknown prompt"):
        ab.messages(levels["level-1"][0], "other")


def test_predictions_end_to_end(tmp_path, levels):
    rows = [{"id": it.id, "output": ab.reference_output(it)} for v in levels.values() for it in v]
    rows[0]["output"] = "<think></think>\n<response> no </response>"
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["eval", "--suite", "apibank", "--predictions", str(preds), "-o", str(tmp_path / "o"),
                              "--prompt", "restlit"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert report["config"]["prompt"] == "restlit"
    assert report["summary"]["apibank:level-1"]["passed"] == 398
    assert report["groups"]["API-Bank"]["items"] == 597
    assert report["groups"]["API-Bank"]["accuracy"] == pytest.approx(596 / 597)
    assert run.parse_suites(["apibank:level-1,level-3"]) == ["apibank:level-1", "apibank:level-3"]
    res = runner.invoke(app, ["eval", "--suite", "apibank", "--predictions", str(preds), "-o", str(tmp_path / "x"),
                              "--prompt", "mine"])
    assert res.exit_code == 2 and "unknown prompt 'mine'" in res.output
