"""``restlit eval``: suites, the held-out scorer, ``--predictions`` end to end, user errors, and
greedy generation with a tiny random model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.evaluation import bfcl, heldout, multiturn, run
from restlit.rewards import format_ok
from restlit.stats import wilson_interval
from tests.conftest import TOOLRL, data_file

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------
# Suites


def test_parse_suites():
    assert run.parse_suites(["bfcl:simple_python,multiple", "heldout"]) == [
        "bfcl:simple_python", "bfcl:multiple", "heldout"]
    assert run.parse_suites(["bfcl:all", "multiple"]) == [f"bfcl:{c}" for c in (*bfcl.CATEGORIES, *multiturn.CATEGORIES)]
    with pytest.raises(run.EvalError, match="unknown suite 'bfcl:java'"):
        run.parse_suites(["bfcl:java"])
    with pytest.raises(run.EvalError, match="unknown suite 'heldout2'"):
        run.parse_suites(["heldout2"])


# ---------------------------------------------------------------------------------------------
# Held-out scoring

TARGET = {"think": "t", "calls": [
    {"name": "Weather", "arguments": {"city": "Paris", "days": 3}},
    {"name": "Time", "arguments": {"tz": "CET"}},
], "response": None}


def _canonical(calls, response=None):
    from restlit.prompts import render_target

    return render_target("r", calls, response)


def test_heldout_exact_match_is_order_free_and_json_equal():
    out = _canonical([{"name": "Time", "arguments": {"tz": "CET"}},
                      {"name": "Weather", "arguments": {"days": 3.0, "city": "Paris"}}])
    s = heldout.score_output(TARGET, out)
    assert s.verdict.passed and s.verdict.reason == "exact match"
    assert s.names_ok and (s.param_tp, s.param_pred, s.param_gold) == (3, 3, 3) and s.format_valid


def test_heldout_mismatch_reasons_and_partial_credit():
    out = _canonical([{"name": "Weather", "arguments": {"city": "paris", "days": 3}},
                      {"name": "Time", "arguments": {"tz": "CET", "fmt": "24h"}}])
    s = heldout.score_output(TARGET, out)
    # no normalisation here: the references are concrete values
    assert not s.verdict.passed and s.verdict.reason == "call 'Weather': parameter 'city': got \"paris\", expected \"Paris\""
    assert (s.param_tp, s.param_pred, s.param_gold) == (2, 4, 3) and s.names_ok
    s = heldout.score_output(TARGET, _canonical([TARGET["calls"][0]]))
    assert s.verdict.reason == "expected 2 calls, got 1" and not s.names_ok
    s = heldout.score_output(TARGET, _canonical([TARGET["calls"][0], {"name": "Clock", "arguments": {"tz": "CET"}}]))
    assert s.verdict.reason == "wrong tool names: expected ['Time', 'Weather'], got ['Clock', 'Weather']"
    s = heldout.score_output(TARGET, _canonical([TARGET["calls"][0], {"name": "Time", "arguments": {}}]))
    assert s.verdict.reason == "call 'Time': missing parameter 'tz'"


def test_heldout_format_validity_is_separate_from_content():
    python = '[Weather(city="Paris", days=3), Time(tz="CET")]'
    s = heldout.score_output(TARGET, python)
    assert s.verdict.passed and not s.format_valid
    assert not format_ok(_canonical(TARGET["calls"]) + "\ntrailing text")
    assert not format_ok("<tool_call>\n{}\n</tool_call>")  # no <think>
    assert format_ok("<think> x </think>\n<response> hi </response>")


def test_heldout_no_call_items():
    target = {"think": "", "calls": [], "response": "No tool fits."}
    s = heldout.score_output(target, "<think></think>\n<response> No tool fits. </response>")
    assert s.verdict.passed and not s.expects_call and not s.made_call
    s = heldout.score_output(target, _canonical([TARGET["calls"][1]]))
    assert not s.verdict.passed and s.verdict.reason == "expected no call, got 1 call ('Time')"
    m = heldout.summarize([s])
    assert m["no_call_accuracy"] == 0.0 and m["tool_name_accuracy"] is None and m["param_precision"] == 0.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from restlit.data_prep.pipeline import prepare

    out = tmp_path_factory.mktemp("prep") / "data"
    prepare([data_file(TOOLRL)], out, val_fraction=0.2, workers=1)
    return out


def test_heldout_suite_on_a_prepared_sample(prepared):
    samples = heldout.load_heldout(prepared)
    assert len(samples) > 20 and any(not s.target["calls"] for s in samples)
    scores = [heldout.score_output(s.target, s.target_text) for s in samples]
    m = heldout.summarize(scores)
    assert m["items"] == len(samples)
    for key in ("exact_match", "tool_name_accuracy", "param_precision", "param_recall", "param_f1",
                "format_validity", "no_call_accuracy"):
        assert m[key] == 1.0, key
    # drop the last call of every multi-call reference: exact match and recall fall, precision stays
    cut = [heldout.score_output(s.target, _canonical(s.target["calls"][:-1], s.target["response"]))
           for s in samples if len(s.target["calls"]) > 1]
    assert cut and all(c.verdict.reason.startswith("expected ") for c in cut)
    m = heldout.summarize(cut)
    assert m["exact_match"] == 0.0 and m["param_precision"] == 1.0 and m["param_recall"] < 1.0


# ---------------------------------------------------------------------------------------------
# --predictions end to end


def test_predictions_end_to_end(tmp_path, prepared):
    rows = []
    simple = bfcl.load_category("simple_python", limit=4)
    for i, item in enumerate(simple):
        out = bfcl.reference_output(item)
        if i == 3:
            out = out.replace(f'"name": "{next(iter(item.ground_truth[0]))}"', '"name": "nope"')
        rows.append({"id": item.id, "output": out})
    irr = bfcl.load_category("irrelevance", limit=4)  # the last two get no prediction
    rows.append({"id": irr[0].id, "output": "<think> no tool </think>\n<response> Cannot. </response>"})
    rows.append({"id": irr[1].id, "output": f"[{irr[1].functions[0]['name']}()]"})
    samples = heldout.load_heldout(prepared, limit=5)
    rows += [{"id": s.id, "output": s.target_text} for s in samples]
    rows.append({"id": "not_an_item", "output": ""})
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)

    res = invoke("--suite", "bfcl:simple_python,irrelevance", "--suite", "heldout", "--data", prepared,
                 "--predictions", preds, "--limit", 4, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "bfcl:simple_python" in res.output and "overall" in res.output and "tool name accuracy" in res.output
    assert "items had no prediction" in res.output and "matched no item" in res.output
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    summary = report["summary"]
    assert summary["bfcl:simple_python"] == {"items": 4, "passed": 3, "accuracy": 0.75,
                                             "interval": wilson_interval(3, 4).to_dict()}
    assert summary["bfcl:irrelevance"] == {"items": 4, "passed": 1, "accuracy": 0.25,
                                           "interval": wilson_interval(1, 4).to_dict()}
    assert summary["heldout"]["items"] == 4 and summary["heldout"]["exact_match"] == 1.0
    assert summary["heldout"]["format_validity"] == 1.0
    assert summary["overall"] == {"items": 12, "passed": 8, "accuracy": pytest.approx(8 / 12),
                                  "interval": wilson_interval(8, 12).to_dict(),
                                  "macro_accuracy": pytest.approx((0.75 + 0.25 + 1.0) / 3)}
    assert report["groups"] == {}  # no BFCL group has all its categories here
    by_id = {r["id"]: r for r in report["items"]}
    assert by_id[simple[3].id]["reason"].startswith("wrong function name: expected")
    assert by_id[irr[1].id]["reason"].startswith("expected no call, got 1 call")
    assert by_id[irr[3].id] == {"suite": "bfcl:irrelevance", "id": irr[3].id, "passed": False,
                                "reason": "no prediction for this id", "output": None}
    assert all(r["reason"] for r in report["items"])
    assert report["missing"] == 2 and report["config"]["predictions"] == str(preds)


# ---------------------------------------------------------------------------------------------
# User mistakes: one line, exit 2


def _one_error_line(res, text):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], res.output
    assert "Traceback" not in res.output


def test_user_errors(tmp_path, prepared):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "simple_python_0", "output": "[f(a=1)]"}])
    _one_error_line(invoke("--suite", "bfcl:nope", "--predictions", preds), "unknown suite 'bfcl:nope'")
    _one_error_line(invoke("--suite", "multiple", "--predictions", tmp_path / "missing.jsonl"),
                    "no such predictions file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "output": "x"}\n{"id": 3}\n')
    _one_error_line(invoke("--suite", "multiple", "--predictions", bad), "bad.jsonl:2: expected an object")
    _one_error_line(invoke("--suite", "heldout", "--predictions", preds), "needs --data DIR")
    _one_error_line(invoke("--suite", "heldout", "--data", tmp_path, "--predictions", preds), "not a prepared dataset")
    _one_error_line(invoke("--suite", "multiple", "--predictions", preds, "--model", "x"), "not both")
    _one_error_line(invoke("--suite", "multiple", "--model", tmp_path / "no_model"), "neither a directory nor")


def test_missing_bfcl_package_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name, *a))
    preds = write_jsonl(tmp_path / "p.jsonl", [])
    _one_error_line(invoke("--suite", "bfcl:multiple", "--predictions", preds), "pip install --no-deps bfcl-eval")


# ---------------------------------------------------------------------------------------------
# Generation through the rollout engine


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2_tokenizer) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny") / "model"
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_generation_is_greedy_and_keeps_input_order(tiny_model):
    items = bfcl.load_category("simple_python", limit=3)
    conversations = [bfcl.item_messages(it) for it in items]
    seen = []
    outs = run.generate_outputs(conversations, str(tiny_model), batch_size=1, max_new_tokens=6,
                                progress=lambda done, total: seen.append((done, total)))
    assert len(outs) == 3 and all(isinstance(o, str) and o for o in outs)
    assert seen[-1] == (3, 3)
    # batch size 1: each output depends on its prompt only, so reversing the inputs reverses them
    again = run.generate_outputs(conversations[::-1], str(tiny_model), batch_size=1, max_new_tokens=6)
    assert again == outs[::-1]


def test_continuous_batching_gives_each_conversation_its_answer_alone(tiny_model):
    """``PrefixCacheGenerator.answers`` (its ``serve``) at width 2 over five conversations whose
    budgets (cut at a tight context) end them at different steps, so a finished row hands its
    place to the next conversation while the other still decodes: every answer is the one the
    conversation gets alone, and a prompt that does not fit gets its ContextOverflow."""
    from restlit.evaluation.multiturn import ContextOverflow
    from restlit.evaluation.session import PrefixCacheGenerator
    from restlit.tokens import prompt_ids

    tokenizer, policy = run.load_model(str(tiny_model))
    conversations = [[{"role": "user", "content": "call " * k + "a tool"}] for k in (1, 12, 3, 9, 0, 60)]
    lengths = [len(prompt_ids(tokenizer, c)) for c in conversations]
    context = max(lengths[:5]) + 3  # budgets from 3 (the longest) to 10 (max_new_tokens)
    assert lengths[5] >= context

    def generator(rows):
        return PrefixCacheGenerator(policy, tokenizer, max_new_tokens=10, max_context=context, reuse=False, rows=rows)

    ended = []
    answers = generator(2).answers(conversations, done=ended.append)
    assert sorted(ended) == list(range(6))
    assert ended != list(range(6))  # rows ended at different steps
    assert isinstance(answers[5], ContextOverflow)
    alone = generator(1)
    assert answers[:5] == [alone(c) for c in conversations[:5]]
    assert len(set(answers[:5])) > 1  # the answers depend on the prompts


def test_eval_with_a_model_end_to_end(tiny_model, tmp_path):
    res = invoke("--suite", "bfcl:simple_python,irrelevance", "--model", tiny_model, "--limit", 2,
                 "--batch-size", 2, "--max-new-tokens", 5, "-o", tmp_path)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert [r["id"] for r in report["items"]] == ["simple_python_0", "simple_python_1", "irrelevance_0", "irrelevance_1"]
    assert all(isinstance(r["output"], str) and r["reason"] for r in report["items"])
    assert report["config"]["model"] == str(tiny_model) and report["missing"] == 0
    # five random tokens make no call: the irrelevance items pass, the others fail saying why
    assert [r["passed"] for r in report["items"]] == [False, False, True, True]
