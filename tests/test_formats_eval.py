"""Output formats in evaluation and on the command line: ``restlit eval --format`` (and the
format recorded with an exported model as its default), ``restlit tag --format --json``, and the
config keys ``data.tool_format`` and ``reward.function``."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.config import ConfigError, DataConfig, load_config
from restlit.evaluation import bfcl, heldout, multiturn
from restlit.formats import FORMATS, get_format
from tests.conftest import TOOLRL, data_file

runner = CliRunner()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from restlit.data_prep.pipeline import prepare

    out = tmp_path_factory.mktemp("prep") / "data"
    prepare([data_file(TOOLRL)], out, val_fraction=0.2, workers=1)
    return out


def _one_error_line(res, text):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], res.output


def test_eval_scores_predictions_in_hermes(tmp_path, prepared):
    hermes = get_format("hermes")
    simple = bfcl.load_category("simple_python", limit=4)
    samples = heldout.load_heldout(prepared, limit=4)
    rows = [{"id": it.id, "output": bfcl.reference_output(it, hermes)} for it in simple]
    rows += [{"id": s.id, "output": hermes.render_target(s.target)} for s in samples]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--suite", "bfcl:simple_python", "--suite", "heldout", "--data", str(prepared),
            "--predictions", str(preds), "--limit", "4"]
    res = runner.invoke(app, [*args, "--format", "hermes", "-o", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "h" / "eval.json").read_text())
    assert report["config"]["format"] == "hermes"
    assert report["summary"]["bfcl:simple_python"]["accuracy"] == 1.0
    assert report["summary"]["heldout"]["exact_match"] == 1.0 and report["summary"]["heldout"]["format_validity"] == 1.0
    # the same outputs read in ToolRL's format: restlit's tolerant parse still reads the calls, but
    # none is well-formed ToolRL output
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "t")])
    report = json.loads((tmp_path / "t" / "eval.json").read_text())
    assert report["config"]["format"] == "toolrl" and report["summary"]["heldout"]["format_validity"] == 0.0
    _one_error_line(runner.invoke(app, [*args, "--format", "xml", "-o", str(tmp_path / "x")]),
                    "unknown output format 'xml'")


def test_multi_turn_reference_passes_in_each_format():
    entries = multiturn.load_category("multi_turn_base", limit=2)
    for name in ("hermes", "llama3_json", "pythonic"):
        for e in entries:
            result = multiturn.score_trajectory(e, multiturn.reference_turns(e, name), fmt=name)
            assert result["passed"], (name, result["reason"])
    prompt = multiturn.initial_messages(entries[0], "hermes")
    assert prompt[0]["restlit_format"] == "hermes" and prompt[0]["restlit_tools"]


@pytest.mark.slow
def test_eval_in_hermes_with_a_model_defaults_to_its_recorded_format(tmp_path):
    from restlit.training.run import sft
    from tests.training import tiny_config

    run_dir = sft(tiny_config(tmp_path, "sft.max_steps=1", "sft.batch_size=2", "data.tool_format=hermes"))
    final = run_dir / "final"
    res = runner.invoke(app, ["eval", "--suite", "bfcl:simple_python", "--model", str(final), "--limit", "2",
                              "--max-new-tokens", "4", "-o", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["config"]["format"] == "hermes" and len(report["items"]) == 2


def test_tag_json_prints_spans_and_calls():
    text = '[f(a=1), g()]'
    res = runner.invoke(app, ["tag", "--format", "pythonic", "--json", text])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["calls"] == [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]
    assert out["spans"][:2] == [{"start": 0, "end": 1, "region": "FORMAT", "text": "["},
                                {"start": 1, "end": 2, "region": "TOOL_NAME", "text": "f"}]
    assert "".join(s["text"] for s in out["spans"]) == text
    _one_error_line(runner.invoke(app, ["tag", "--format", "xml", "x"]), "unknown output format 'xml'")


def test_config_keys():
    assert typing.get_args(typing.get_type_hints(DataConfig)["tool_format"]) == tuple(FORMATS)
    assert load_config(None, ["data.tool_format=pythonic"]).data.tool_format == "pythonic"
    with pytest.raises(ConfigError, match=r"data.tool_format: 'xml' is not allowed"):
        load_config(None, ["data.tool_format=xml"])
    cfg = load_config(None, ["reward.function=tests.training:even_token_reward"])
    assert cfg.reward.function == "tests.training:even_token_reward"
    for spec, msg in (("nope.module:f", "cannot import nope"), ("tests.training:TINY", "has no callable 'TINY'"),
                      ("tests.training", "is not 'package.module:callable'")):
        with pytest.raises(ConfigError, match=msg) as info:
            load_config(None, [f"reward.function={spec}"])
        assert "\n" not in str(info.value)


def test_fit_uses_the_reward_function_of_the_config(tiny_parts):
    from restlit.training.module import RestModule
    from tests.training import TINY, even_token_reward

    tok, policy = tiny_parts
    module = RestModule(load_config(TINY, ["reward.function=tests.training:even_token_reward"]), policy, tok)
    assert module.reward_fn is even_token_reward
    default = RestModule(load_config(TINY, ["data.tool_format=hermes"]), policy, tok)
    assert default.format.name == "hermes" and default.reward_fn is not even_token_reward
