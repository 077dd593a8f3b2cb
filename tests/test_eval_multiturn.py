"""BFCL multi-turn, executed: ground-truth replay of all 800 entries, the checker's failure reasons,
the inference loop (scripted steps on the tiny model, step limit, context overflow), prefix reuse,
and the CLI with saved trajectories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.evaluation import bfcl, run
from restlit.evaluation import multiturn as mt
from restlit.prompts import render_target
from tests.conftest import REPO

runner = CliRunner()
TINY = REPO / "configs" / "tiny-test.yaml"
NO_CALL = "<think></think>\n<response> I cannot do that. </response>"


@pytest.fixture(scope="module")
def entries() -> dict[str, list[mt.Entry]]:
    return {c: mt.load_category(c) for c in mt.CATEGORIES}


def step(*calls: tuple[str, dict]) -> str:
    return render_target("", [{"name": n, "arguments": a} for n, a in calls], None)


def by_id(entries, entry_id: str) -> mt.Entry:
    return next(e for c in entries.values() for e in c if e.id == entry_id)


# ---------------------------------------------------------------------------------------------
# Data and ground truth


def test_categories_load_with_their_ground_truth(entries):
    assert {c: len(v) for c, v in entries.items()} == {c: 200 for c in mt.CATEGORIES}
    for category, items in entries.items():
        for e in items:
            assert len(e.ground_truth) == len(e.turns) and e.category == category
    # positional ground-truth calls are bound to their parameter names
    e = by_id(entries, "multi_turn_miss_func_0")
    assert e.ground_truth[3] == [mt.Call("sort", {"file_name": "final_report.pdf"})]
    positional = sum(1 for items in entries.values() for e in items for turn in e.ground_truth for c in turn
                     if c.name == "sort")
    assert positional > 0


def test_constants_are_bfcls():
    from bfcl_eval.constants import default_prompts
    from bfcl_eval.constants import executable_backend_config as backend

    assert mt.STEP_LIMIT == default_prompts.MAXIMUM_STEP_LIMIT
    assert mt.MISSED_FUNCTION_PROMPT == default_prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
    for name, module in mt._MODULES.items():
        assert backend.CLASS_FILE_PATH_MAPPING[name] == f"{mt._BACKEND}.{module}"
        assert backend.MULTI_TURN_FUNC_DOC_FILE_MAPPING[name] == mt._DOCS[name]
    assert set(backend.STATELESS_CLASSES) == mt._STATELESS


def test_miss_func_adds_the_held_out_tools_at_their_turn(entries):
    e = by_id(entries, "multi_turn_miss_func_0")
    assert e.missed.keys() == {3} and [f["name"] for f in e.missed[3]] == ["sort"]
    system = mt.initial_messages(e)[0]["content"]
    assert '"name": "mv"' in system and '"name": "sort"' not in system
    (msg,) = mt.turn_message(e, 3)
    assert msg["role"] == "user" and '"name": "sort"' in msg["content"]
    assert msg["content"].endswith("I have updated some more functions you can choose from. What about now?")
    assert mt.turn_message(e, 0) == e.turns[0]


def test_ground_truth_replay_passes_every_entry_and_no_call_fails_every_entry(entries):
    for category, items in entries.items():
        results = [mt.score_trajectory(e, mt.reference_turns(e)) for e in items]
        failed = [(e.id, r["reason"]) for e, r in zip(items, results) if not r["passed"]]
        assert not failed, (category, failed[:3])
        silent = [mt.score_trajectory(e, [[NO_CALL] for _ in e.ground_truth]) for e in items]
        assert not any(r["passed"] for r in silent), category
        assert {r["reason"] for r in silent} == {"no call"}


def test_replay_twice_in_one_process_is_identical(entries):
    items = [e for c in mt.CATEGORIES for e in entries[c][:25]]
    first = [mt.score_trajectory(e, mt.reference_turns(e)) for e in items]
    second = [mt.score_trajectory(e, mt.reference_turns(e)) for e in items]
    assert first == second
    # and a failing run in between changes nothing for the next one
    [mt.score_trajectory(e, [[step(("rm", {"file_name": "x"}), ("touch", {"file_name": "y"}))]] * len(e.turns))
     for e in items]
    assert [mt.score_trajectory(e, mt.reference_turns(e)) for e in items] == first


# ---------------------------------------------------------------------------------------------
# Mutations: the right reason


def _with_first_turn(e: mt.Entry, calls: list[tuple[str, dict]]) -> list[list[str]]:
    turns = mt.reference_turns(e)
    turns[0] = [step(*calls), NO_CALL]
    return turns


def test_mutations_fail_for_the_right_reason(entries):
    e = by_id(entries, "multi_turn_base_0")
    gt = [(c.name, c.arguments) for c in e.ground_truth[0]]
    assert [n for n, _ in gt] == ["cd", "mkdir", "mv"]
    # a dropped state-changing call: the file system differs
    r = mt.score_trajectory(e, _with_first_turn(e, [gt[0], gt[2]]))
    assert not r["passed"] and r["failed_turn"] == 0
    assert r["reason"].startswith("state mismatch: GorillaFileSystem.root")
    # a wrong argument of a state-changing call
    r = mt.score_trajectory(e, _with_first_turn(e, [gt[0], ("mkdir", {"dir_name": "tmp"}), gt[2]]))
    assert r["reason"].startswith("state mismatch: GorillaFileSystem.root") and r["failed_turn"] == 0
    # an extra call that changes state
    r = mt.score_trajectory(e, _with_first_turn(e, [*gt, ("touch", {"file_name": "extra.txt"})]))
    assert r["reason"].startswith("state mismatch: GorillaFileSystem.root")
    # an extra read-only call still passes, in the same step or in a step of its own
    assert mt.score_trajectory(e, _with_first_turn(e, [*gt, ("ls", {})]))["passed"]
    turns = mt.reference_turns(e)
    turns[0] = [step(("ls", {})), step(*gt), NO_CALL]
    assert mt.score_trajectory(e, turns)["passed"]
    # a wrong argument of a read-only call: the state matches, the result is missing
    e = by_id(entries, "multi_turn_base_31")
    gt = [(c.name, dict(c.arguments)) for c in e.ground_truth[0]]
    grep = next(i for i, (n, _) in enumerate(gt) if n == "grep")
    gt[grep][1]["pattern"] = "no such text"
    r = mt.score_trajectory(e, _with_first_turn(e, gt))
    assert not r["passed"] and r["reason"].startswith("missing result ") and r["failed_turn"] == 0
    # a later turn's failure is reported at that turn
    e = by_id(entries, "multi_turn_base_0")
    turns = mt.reference_turns(e)
    turns[2] = [NO_CALL]
    r = mt.score_trajectory(e, turns)
    assert (r["reason"], r["failed_turn"]) == ("no call", 2)


def test_trajectory_records_calls_results_and_decode_errors(entries):
    e = by_id(entries, "multi_turn_base_0")
    turns = mt.reference_turns(e)
    turns[0] = ['<tool_call>\n{"name": "ls", "parameters": {}}\n{"name": broken}\n</tool_call>', *turns[0]]
    r = mt.score_trajectory(e, turns)
    assert r["passed"]
    first = r["trajectory"][0]
    assert "error" in first["steps"][0] and "calls" not in first["steps"][0]  # a step that does not decode is dropped
    assert [c["name"] for c in first["steps"][1]["calls"]] == ["cd", "mkdir", "mv"]
    assert all(isinstance(c["result"], str) for c in first["steps"][1]["calls"])
    assert [c["name"] for c in first["ground_truth"]] == ["cd", "mkdir", "mv"]
    # calls BFCL refuses or does not know are results, not crashes
    env = mt.Environment(e)
    assert env.execute(mt.Call("exit", {})) == "Error during execution: Function call exit is not allowed."
    assert env.execute(mt.Call("nope", {})) == "Error during execution: name 'nope' is not defined"
    assert env.execute(mt.Call("cd", {"wrong": 1})).startswith("Error during execution: ")


def test_missing_turns_and_stops_fail(entries):
    e = by_id(entries, "multi_turn_base_0")
    ref = mt.reference_turns(e)
    r = mt.score_trajectory(e, ref[:2])
    assert not r["passed"] and r["failed_turn"] == 2 and r["reason"].startswith("no output for turn 2")
    r = mt.score_trajectory(e, ref[:2], stop="context_overflow")
    assert (r["reason"], r["failed_turn"]) == ("context_overflow", 1)
    too_many = [step(("ls", {}))] * (mt.STEP_LIMIT + 1)
    r = mt.score_trajectory(e, [too_many, *ref[1:]])
    assert (r["reason"], r["failed_turn"]) == ("step limit", 0)


# ---------------------------------------------------------------------------------------------
# The inference loop


@pytest.fixture(scope="module")
def tiny():
    from restlit.config import load_config
    from restlit.training.run import build_tokenizer_and_policy

    tokenizer, policy = build_tokenizer_and_policy(load_config(TINY))
    return tokenizer, policy.eval()


class Scripted:
    """A fake model that writes the ground-truth calls one call per step, then a step without a
    call; it runs the tiny model on every prompt first (so the loop's prompts, chat template and
    KV cache are exercised) and checks that each call's result came back as a tool message."""

    def __init__(self, entry: mt.Entry, model=None):
        self.entry, self.model = entry, model
        self.turn, self.users, self.pending, self.expect_tool = -1, 0, [], False

    def __call__(self, messages):
        if self.model is not None:
            self.model(messages)
        users = sum(m["role"] == "user" for m in messages)
        if users != self.users:
            self.users, self.turn = users, self.turn + 1
            self.pending = list(self.entry.ground_truth[self.turn])
        elif self.expect_tool:
            assert messages[-1]["role"] == "tool" and messages[-2]["role"] == "assistant"
        if not self.pending:
            self.expect_tool = False
            return NO_CALL
        call = self.pending.pop(0)
        self.expect_tool = True
        return step((call.name, call.arguments))


def test_rollout_of_scripted_ground_truth_steps_on_the_tiny_model_passes(entries, tiny):
    from restlit.evaluation.session import PrefixCacheGenerator

    tokenizer, policy = tiny
    model = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=2, max_context=1 << 16)
    for category in mt.CATEGORIES:
        for e in entries[category][:2]:
            model.reset()
            out = mt.rollout(e, Scripted(e, model))
            assert out["stop"] is None and len(out["turns"]) == len(e.turns)
            assert [len(t) for t in out["turns"]] == [len(calls) + 1 for calls in e.ground_truth]
            r = mt.score_trajectory(e, out["turns"], out["stop"])
            assert r["passed"], (e.id, r["reason"])
    # a scripted model that never stops calling ends the entry at the step limit, cleanly
    e = entries["multi_turn_base"][0]
    out = mt.rollout(e, lambda messages: step(("ls", {})))
    assert out["stop"] == "step limit" and len(out["turns"]) == 1 and len(out["turns"][0]) == mt.STEP_LIMIT + 1
    assert mt.score_trajectory(e, out["turns"], out["stop"])["reason"] == "step limit"


def test_context_overflow_ends_the_entry_cleanly(entries, tiny):
    from restlit.evaluation.session import PrefixCacheGenerator
    from restlit.tokens import prompt_ids

    tokenizer, policy = tiny
    e = entries["multi_turn_base"][0]
    first = len(prompt_ids(tokenizer, mt.initial_messages(e) + mt.turn_message(e, 0)))
    model = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=2, max_context=first + 60)
    out = mt.rollout(e, Scripted(e, model))
    assert out["stop"] == "context_overflow" and 0 < len(out["turns"]) < len(e.turns)
    r = mt.score_trajectory(e, out["turns"], out["stop"])
    assert not r["passed"] and r["reason"] == "context_overflow"
    model = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=2, max_context=first - 1)
    assert mt.rollout(e, model) == {"turns": [[]], "stop": "context_overflow"}


def test_prefix_reuse_gives_the_same_outputs_with_less_encoding(entries, tiny):
    from restlit.evaluation.session import PrefixCacheGenerator, common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([1], [1, 2]) == 1
    tokenizer, policy = tiny
    runs = {}
    for reuse in (True, False):
        model = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=6, max_context=1 << 16, reuse=reuse)
        outs = []
        for e in entries["multi_turn_base"][:2]:
            model.reset()
            outs.append(mt.rollout(e, Scripted(e, model)))
            model.reset()
            outs.append(mt.rollout(e, model))  # the tiny model's own (random) steps
        runs[reuse] = (outs, model.encoded)
    assert runs[True][0] == runs[False][0]
    assert runs[True][1] * 3 < runs[False][1]


def test_drive_runs_entries_width_at_a_time_in_slots_and_keeps_their_order(entries):
    """In rounds (``serve_in_rounds``, the vLLM engine's way, over a fake ``many``): entry
    ``multi_turn_base_1`` overflows at its first step, every other step makes no call (one step
    per turn)."""
    import functools

    from restlit.evaluation.session import serve_in_rounds

    es = entries["multi_turn_base"][:5]
    calls, ended = [], []

    def generate_many(conversations, slots):
        calls.append(list(slots))
        texts = []
        for messages in conversations:
            first_user = next(m["content"] for m in messages if m["role"] == "user")
            texts.append(mt.ContextOverflow("too long") if first_user == es[1].turns[0][0]["content"] else NO_CALL)
        return texts

    out = mt.drive([mt.entry_steps(e) for e in es], functools.partial(serve_in_rounds, generate_many), width=2,
                   done=ended.append)
    assert [o["stop"] for o in out] == [None, "context_overflow", None, None, None]
    assert [len(o["turns"]) for o in out] == [len(es[0].turns), 1, *[len(e.turns) for e in es[2:]]]
    assert all(steps == [NO_CALL] for i, o in enumerate(out) if i != 1 for steps in o["turns"])
    assert max(len(c) for c in calls) == 2 and all(set(c) <= {0, 1} for c in calls)
    assert sorted(ended) == list(range(5)) and ended[0] == 1  # the overflowing entry ends first
    # one answer per round per running entry: as many calls as the longest chain of a slot needs
    assert sum(len(c) for c in calls) == sum(len(o["turns"]) for o in out)


def test_entries_decoded_together_equal_one_at_a_time(entries, tiny):
    """The tiny model's own greedy steps: ``many`` over conversations of different lengths (and so
    different budgets under a tight context) gives each the text it gets alone, in one forward
    per step for the rows still running; ``drive`` over 4 entries, 3 at a time, gives the
    same results as one at a time. (The random tiny model barely reads its 4k-token contexts, so
    a row fed another row's cache is caught by ``tests/test_kvcache.py``, not here.)"""
    import torch

    from restlit.evaluation.session import PrefixCacheGenerator
    from restlit.tokens import prompt_ids

    tokenizer, policy = tiny
    es = entries["multi_turn_base"][:4]
    conversations = [mt.initial_messages(e) + mt.turn_message(e, 0) for e in es[:3]]
    longest = max(len(prompt_ids(tokenizer, c)) for c in conversations)
    batch_rows = []
    hook = policy.register_forward_pre_hook(lambda module, args, kwargs: batch_rows.append(kwargs["input_ids"].shape[0]),
                                            with_kwargs=True)
    try:
        together = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=6, max_context=longest + 3, rows=3)
        texts = together.many(conversations)
    finally:
        hook.remove()
    assert max(batch_rows) == 3  # the decoding steps ran the rows together
    alone = [PrefixCacheGenerator(policy, tokenizer, max_new_tokens=6, max_context=longest + 3)(c)
             for c in conversations]
    assert texts == alone
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert len(set(lengths)) > 1  # the rows ended at different steps
    with torch.no_grad():
        results = {}
        for width in (1, 3):
            generator = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=6, max_context=1 << 16, rows=width)
            results[width] = mt.drive([mt.entry_steps(e) for e in es], generator.serve, width=width)
    assert results[1] == results[3]
    assert [len(r["turns"]) for r in results[3]] == [len(e.turns) for e in es]


@pytest.mark.slow
def test_multi_turn_on_the_vllm_engine_matches_the_hf_generator(entries):
    """``--engine vllm``: the rounds' conversations go to vLLM (prefix caching on) and the tiny
    model's greedy steps are the HF generator's; a context smaller than the first prompt is a
    context overflow, as on the HF path; single-turn outputs agree too."""
    from tests.test_rollout import HEADS, need_vllm

    need_vllm()
    from restlit.config import load_config
    from restlit.training.run import build_tokenizer_and_policy

    positions = ["model.architecture.max_position_embeddings=8192"]
    tokenizer, policy = build_tokenizer_and_policy(load_config(TINY, [*HEADS, *positions]))
    policy.eval()
    with pytest.raises(run.EvalError, match="exceeds the model's 8192 positions"):
        run.eval_engine("vllm", tokenizer, policy, batch_size=2, max_context=8193)
    suite = run.load_suite("bfcl:multi_turn_base", limit=3)
    results = {kind: run.rollout_outputs([suite], (tokenizer, policy), max_new_tokens=5, max_context=8192,
                                         batch_size=2, engine=kind) for kind in ("hf", "vllm")}
    assert results["vllm"] == results["hf"]
    assert [len(results["vllm"][i]["turns"]) for i in suite.ids] == [len(e.turns) for e in entries["multi_turn_base"][:3]]
    tight = run.rollout_outputs([suite], (tokenizer, policy), max_new_tokens=5, max_context=1000, batch_size=2,
                                engine="vllm")
    assert all(r == {"turns": [[]], "stop": "context_overflow"} for r in tight.values())
    # single-turn suites generate on the same engine
    simple = run.load_suite("bfcl:simple_python", limit=3)
    conversations = [simple.messages(i) for i in range(3)]
    texts = {kind: run.generate_outputs(conversations, (tokenizer, policy), batch_size=2, max_new_tokens=5,
                                        engine=kind) for kind in ("hf", "vllm")}
    assert texts["vllm"] == texts["hf"] and all(texts["hf"])


# ---------------------------------------------------------------------------------------------
# The CLI


def invoke(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_predictions_for_multi_turn_end_to_end(tmp_path, entries):
    rows = []
    for c in mt.CATEGORIES:
        for i, e in enumerate(entries[c][:4]):
            rows.append({"id": e.id, "turns": mt.reference_turns(e) if i < 3 else [[NO_CALL]] * len(e.turns)})
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = invoke("--suite", "bfcl:multi_turn", "--predictions", preds, "--limit", 4, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "multi-turn" in res.output and "95% CI" in res.output
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    for c in mt.CATEGORIES:
        s = report["summary"][f"bfcl:{c}"]
        assert (s["items"], s["passed"], s["accuracy"]) == (4, 3, 0.75)
        assert s["interval"]["low"] < 0.75 < s["interval"]["high"]
    assert report["groups"]["multi-turn"]["accuracy"] == pytest.approx(0.75)
    rec = next(r for r in report["items"] if r["id"] == "multi_turn_base_3")
    assert (rec["passed"], rec["reason"], rec["failed_turn"]) == (False, "no call", 0)
    assert rec["trajectory"][0]["steps"][0]["text"] == NO_CALL
    ok = next(r for r in report["items"] if r["id"] == "multi_turn_base_0")
    assert ok["passed"] and ok["trajectory"][0]["steps"][0]["calls"][0]["name"] == "cd"
    # the output directory now holds a result: refused without --overwrite
    res = invoke("--suite", "bfcl:multi_turn", "--predictions", preds, "--limit", 4, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "already holds an evaluation" in res.output and "--overwrite" in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1
    res = invoke("--suite", "bfcl:multi_turn_base", "--predictions", preds, "--limit", 2, "-o", tmp_path / "out",
                 "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["summary"]["overall"]["items"] == 2


def test_an_unknown_engine_is_one_line(tmp_path):
    res = invoke("--suite", "bfcl:multi_turn_base", "--engine", "tgi", "--limit", 1, "-o", tmp_path / "e")
    assert res.exit_code == 2 and "--engine: 'tgi' is not one of hf, vllm" in res.output
    assert not (tmp_path / "e").exists()


def test_bad_multi_turn_predictions_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "multi_turn_base_0", "turns": ["not a list of steps"]}\n')
    res = invoke("--suite", "bfcl:multi_turn_base", "--predictions", bad, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "bad.jsonl:1: 'turns' must be a list of lists of strings" in res.output
    # an output text for a multi-turn entry, and turns for a single-turn item, fail the item
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"id": "multi_turn_base_0", "output": "x"}) + "\n"
                     + json.dumps({"id": "simple_python_0", "turns": [["x"]]}) + "\n")
    res = invoke("--suite", "bfcl:multi_turn_base,simple_python", "--predictions", mixed, "--limit", 1,
                 "-o", tmp_path / "m")
    assert res.exit_code == 0, res.output
    items = json.loads((tmp_path / "m" / "eval.json").read_text())["items"]
    assert [r["passed"] for r in items] == [False, False]
    assert items[0]["reason"].startswith("expected the steps of each turn")
    assert items[1]["reason"].startswith("expected one output text")


def test_bfcl_all_ends_with_the_leaderboard_groups(tmp_path):
    suites = [run.load_suite(n, limit=3) for n in run.parse_suites(["bfcl:all"])]
    assert len(suites) == len(bfcl.CATEGORIES) + len(mt.CATEGORIES)
    outputs = {}
    for s in suites:
        category = s.name.split(":", 1)[1]
        if s.multi_turn:
            for e in mt.load_category(category, 3):
                outputs[e.id] = {"turns": mt.reference_turns(e), "stop": None}
        else:
            for it in bfcl.load_category(category, 3):
                outputs[it.id] = bfcl.reference_output(it)
    outputs[suites[0].ids[0]] = NO_CALL  # one simple_python failure
    result = run.score(suites, outputs)
    g = result["groups"]
    assert list(g) == ["non-live AST", "live AST", "multi-turn", "irrelevance", "overall"]
    acc = {n: result["summary"][n]["accuracy"] for n in result["summary"]}
    non_live = [acc[f"bfcl:{c}"] for c in ("simple_python", "multiple", "parallel", "parallel_multiple")]
    assert g["non-live AST"]["accuracy"] == pytest.approx(sum(non_live) / 4)
    live = [result["summary"][f"bfcl:{c}"] for c in ("live_simple", "live_multiple", "live_parallel",
                                                      "live_parallel_multiple")]
    assert g["live AST"]["accuracy"] == pytest.approx(sum(s["passed"] for s in live) / sum(s["items"] for s in live))
    assert g["multi-turn"]["accuracy"] == 1.0 and g["multi-turn"]["items"] == 12
    four = [g[n]["accuracy"] for n in ("non-live AST", "live AST", "multi-turn", "irrelevance")]
    assert g["overall"]["accuracy"] == pytest.approx(sum(four) / 4)
    for v in g.values():
        assert v["interval"]["low"] <= v["accuracy"] <= v["interval"]["high"] and v["interval"]["n"] == v["items"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny) -> Path:
    tokenizer, policy = tiny
    path = tmp_path_factory.mktemp("tiny") / "model"
    policy.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_eval_with_a_model_on_multi_turn_end_to_end(tiny_dir, tmp_path):
    res = invoke("--suite", "bfcl:multi_turn_base", "--model", tiny_dir, "--limit", 2, "--max-new-tokens", 3,
                 "--max-context", 1 << 16, "-o", tmp_path / "a")
    assert res.exit_code == 0, res.output
    items = json.loads((tmp_path / "a" / "eval.json").read_text())["items"]
    assert [r["id"] for r in items] == ["multi_turn_base_0", "multi_turn_base_1"]
    # three random tokens make no call: the first turn fails with "no call"
    assert all((r["passed"], r["reason"], r["failed_turn"]) == (False, "no call", 0) for r in items)
    assert all(len(r["trajectory"][0]["steps"]) == 1 for r in items)
    # a context smaller than the first prompt: every entry fails with context_overflow, no crash
    res = invoke("--suite", "bfcl:multi_turn_base", "--model", tiny_dir, "--limit", 2, "--max-new-tokens", 3,
                 "--max-context", 1000, "-o", tmp_path / "b")
    assert res.exit_code == 0, res.output
    items = json.loads((tmp_path / "b" / "eval.json").read_text())["items"]
    assert [r["reason"] for r in items] == ["context_overflow"] * 2
