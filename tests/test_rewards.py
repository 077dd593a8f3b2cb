"""restlit.rewards on ToolRL's real reference completions (tests/data/toolrl/rlla_sft.json) and hand cases."""

from __future__ import annotations

import json

import pytest

from restlit.rewards import (
    Ramp,
    RewardConfig,
    compute_reward,
    correctness_reward,
    format_ok,
    multiset_jaccard,
    predicted_calls,
    reward_bounds,
    tool_call_score,
)
from tests.conftest import TOOLRL, data_file

DATA = data_file(TOOLRL)
STEPS = (0, 75, 150, 400)
FIXED = RewardConfig(mode="fixed")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """ToolRL's reference outputs with the targets ``restlit prepare``'s ToolRL reader makes of them."""
    from restlit.data_prep import toolrl

    raw = json.loads(DATA.read_text())
    assert len(raw) == 400
    return [{"text": r["output"], "target": toolrl.read(r).turns[-1].target.to_dict()} for r in raw]


def render(think: str, calls: list[dict] | None, response: str | None = None) -> str:
    """A completion in the canonical format, one ``{"name", "parameters"}`` JSON object per line."""
    parts = [f"<think> {think} </think>"]
    if calls is not None:
        lines = [json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls]
        parts.append("<tool_call>\n" + "\n".join(lines) + "\n</tool_call>")
    if response is not None:
        parts.append(f"<response> {response} </response>")
    return "\n".join(parts)


def first(records: list[dict], predicate) -> dict:
    return next(r for r in records if predicate(r["target"]))


def scaled(score: float, s_max: float, lo: float, hi: float) -> float:
    return (hi - lo) * score / s_max + lo


# --------------------------------------------------------------------------------------------------------
# The references themselves
# --------------------------------------------------------------------------------------------------------


def test_targets_from_references(records: list[dict]) -> None:
    with_calls = [r for r in records if r["target"]["calls"]]
    with_response = [r for r in records if r["target"]["response"] is not None]
    assert len(with_calls) + len(with_response) >= 400 and with_calls and with_response
    call = with_calls[0]["target"]["calls"][0]
    assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
    assert all(r["target"]["think"] for r in records)


@pytest.mark.parametrize("config", [RewardConfig(), FIXED], ids=["scheduled", "fixed"])
def test_every_reference_scores_the_maximum(records: list[dict], config: RewardConfig) -> None:
    for step in STEPS:
        b = reward_bounds(step, config)
        for r in records:
            reward = compute_reward(r["text"], r["target"], step, config)
            assert reward.format == b.format_max, r["text"][-200:]
            assert reward.correctness == (b.correctness_max if r["target"]["calls"] else 0.0)
            assert reward.total == reward.format + reward.correctness


def test_rendered_reference_still_scores_the_maximum(records: list[dict]) -> None:
    for r in records[:50]:
        t = r["target"]
        text = render(t["think"], t["calls"] or None, t["response"])
        assert compute_reward(text, t, 0, FIXED).total == 1.0 + (3.0 if t["calls"] else 0.0)


# --------------------------------------------------------------------------------------------------------
# Each flaw of a completion lowers the reward as docs/method.md, "Reward", says
# --------------------------------------------------------------------------------------------------------


def test_wrong_value_lowers_correctness_by_one_value(records: list[dict]) -> None:
    r = first(records, lambda t: len(t["calls"]) == 1 and len(t["calls"][0]["arguments"]) >= 2)
    t = r["target"]
    call = t["calls"][0]
    key = next(iter(call["arguments"]))
    wrong = [{"name": call["name"], "arguments": {**call["arguments"], key: "definitely wrong"}}]
    n = len(call["arguments"])
    # score = J(names) + J(keys) + (n - 1) equal values; S_max = 1 + (1 + n).
    for step in STEPS:
        b = reward_bounds(step)
        reward = compute_reward(render(t["think"], wrong), t, step)
        assert reward.format == b.format_max
        expected = scaled(1 + 1 + (n - 1), 2 + n, b.correctness_min, b.correctness_max)
        assert reward.correctness == pytest.approx(expected)
        assert b.correctness_min < reward.correctness < b.correctness_max


def test_missing_call_lowers_correctness(records: list[dict]) -> None:
    r = first(records, lambda t: len(t["calls"]) >= 2 and len({c["name"] for c in t["calls"]}) == len(t["calls"]))
    t = r["target"]
    calls = t["calls"]
    kept = calls[:-1]
    n = len(calls)
    score = (n - 1) / n + sum(1 + len(c["arguments"]) for c in kept)
    s_max = 1 + sum(1 + len(c["arguments"]) for c in calls)
    reward = compute_reward(render(t["think"], kept), t, 0, FIXED)
    assert reward.format == 1.0
    assert reward.correctness == pytest.approx(scaled(score, s_max, -3.0, 3.0))
    assert -3.0 < reward.correctness < 3.0


def test_reordered_calls_keep_full_credit(records: list[dict]) -> None:
    r = first(records, lambda t: len(t["calls"]) >= 2 and len({c["name"] for c in t["calls"]}) == len(t["calls"]))
    t = r["target"]
    reward = compute_reward(render(t["think"], t["calls"][::-1]), t, 0, FIXED)
    assert reward.correctness == pytest.approx(3.0)


def test_broken_json_gets_the_minimum(records: list[dict]) -> None:
    r = first(records, lambda t: len(t["calls"]) >= 1)
    t = r["target"]
    text = r["text"]
    close = text.rindex("}}")
    broken = text[:close] + text[close + 1 :]  # drop one closing brace of the last call
    for step in STEPS:
        b = reward_bounds(step)
        reward = compute_reward(broken, t, step)
        assert reward.format == b.format_max  # the tags are all there
        assert reward.correctness == b.correctness_min


@pytest.mark.parametrize(
    "line",
    [
        "{'name': 'X', 'parameters': {}}",  # single quotes: not JSON
        '[{"name": "X", "parameters": {}}]',  # a JSON list, not one object per line
        'X(a="1")',  # Python-call syntax
        '{"name": "X", "arguments": {}}',  # no "parameters"
        '{"name": "X", "parameters": {}} {"name": "Y", "parameters": {}}',  # two objects on a line
        "I will call the tool now.",  # prose
    ],
)
def test_non_canonical_lines_get_the_minimum(records: list[dict], line: str) -> None:
    t = first(records, lambda t: len(t["calls"]) >= 1)["target"]
    text = f"<think> x </think>\n<tool_call>\n{line}\n</tool_call>"
    assert predicted_calls(text) is None
    assert correctness_reward(text, t, -3.0, 3.0) == -3.0


def test_missing_tags(records: list[dict]) -> None:
    r = first(records, lambda t: len(t["calls"]) >= 1)
    t, text = r["target"], r["text"]
    b = reward_bounds(10)
    no_close = text.replace("</tool_call>", "")
    reward = compute_reward(no_close, t, 10)
    assert reward.format == b.format_min and reward.correctness == b.correctness_min
    no_think = text.replace("<think>", "", 1)
    reward = compute_reward(no_think, t, 10)
    assert reward.format == b.format_min and reward.correctness == b.correctness_max
    no_call = text[: text.index("<tool_call>")]
    reward = compute_reward(no_call, t, 10)
    assert reward.format == b.format_min and reward.correctness == b.correctness_min


def test_response_case(records: list[dict]) -> None:
    r = first(records, lambda t: not t["calls"] and t["response"] is not None)
    t, text = r["target"], r["text"]
    b = reward_bounds(0)
    assert compute_reward(text, t, 0).correctness == 0.0  # no ground-truth call: correctness is 0
    assert compute_reward(text.replace("</response>", ""), t, 0).format == b.format_min
    # A tool call where the ground truth answers directly breaks the format, not the correctness.
    extra = render(t["think"], [{"name": "X", "arguments": {}}], t["response"])
    reward = compute_reward(extra, t, 0)
    assert reward.format == b.format_min and reward.correctness == 0.0


def test_format_rules() -> None:
    target = {"think": "x", "calls": [{"name": "f", "arguments": {}}], "response": None}
    good = '<think> a </think>\n<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>'
    assert format_ok(good, target)
    assert format_ok("  " + good + "\n", target)
    # A tag named inside the reasoning is text, not a tag.
    assert format_ok(good.replace(" a ", " I will use <tool_call> and no <response> "), target)
    assert not format_ok("Sure! " + good, target)  # stray text
    assert not format_ok(good + "\n</response>", target)  # stray tag
    assert not format_ok(good + "\n<response> hi </response>", target)  # a block the case does not need
    assert not format_ok(good.replace("<think> a </think>\n", "") + "\n<think> a </think>", target)  # order
    assert not format_ok(good + "\n" + good[good.index("<tool_call>"):], target)  # twice
    both = {**target, "response": "r"}
    assert format_ok(good + "\n<response> r </response>", both)
    assert not format_ok(good, both)


def test_format_without_a_target_accepts_any_canonical_layout() -> None:
    good = '<think> a </think>\n<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>'
    assert format_ok(good) and format_ok(good + "\n<response> r </response>")
    assert format_ok("<think> a </think>\n<response> r </response>")
    assert not format_ok("<think> a </think>")  # neither a call nor a response
    assert not format_ok("Sure! " + good) and not format_ok(good + "\n</response>")
    # every line of the call block one canonical JSON call (the reward leaves that to correctness)
    python = "<think> a </think>\n<tool_call>\n[f(x=1)]\n</tool_call>"
    target = {"think": "a", "calls": [{"name": "f", "arguments": {"x": 1}}], "response": None}
    assert format_ok(python, target) and not format_ok(python)


# --------------------------------------------------------------------------------------------------------
# Pieces, by hand
# --------------------------------------------------------------------------------------------------------


def test_multiset_jaccard() -> None:
    assert multiset_jaccard(["a", "a", "b"], ["a", "b", "c"]) == pytest.approx(2 / 4)
    assert multiset_jaccard(["a", "b"], ["b", "a"]) == 1.0
    assert multiset_jaccard([], []) == 1.0
    assert multiset_jaccard(["a"], []) == 0.0
    assert multiset_jaccard(["a", "a"], ["a"]) == pytest.approx(1 / 2)


def test_tool_call_score_hand_computed() -> None:
    gt = [{"name": "f", "arguments": {"x": 1, "y": "a"}}, {"name": "g", "arguments": {}}]
    pred = [{"name": "f", "arguments": {"x": 1.0, "z": 3}}, {"name": "h", "arguments": {}}]
    # names J({f,g},{f,h}) = 1/3; f: J({x,y},{x,z}) = 1/3 plus x equal (1 == 1.0) -> 4/3; g: no candidate.
    score, s_max = tool_call_score(gt, pred)
    assert score == pytest.approx(1 / 3 + 4 / 3) and s_max == 1 + 3 + 1
    # Each predicted call is used once: two identical ground-truth calls, one prediction.
    score, s_max = tool_call_score([gt[1], gt[1]], [gt[1]])
    assert score == pytest.approx(1 / 2 + 1.0) and s_max == 1 + 1 + 1


def test_schedule() -> None:
    b0, b75, b150, b400 = (reward_bounds(s) for s in (0, 75, 150, 400))
    assert (b0.format_min, b0.format_max, b0.correctness_min, b0.correctness_max) == (-2, 2, -2, 2)
    assert b75.format_min == pytest.approx(-1) and b75.format_max == pytest.approx(1.5)
    assert b75.correctness_min == pytest.approx(-2.5) and b75.correctness_max == pytest.approx(2.5)
    for b in (b150, b400):
        assert (b.format_min, b.format_max, b.correctness_min, b.correctness_max) == (-1, 1, -3, 3)
    assert reward_bounds(123, FIXED) == reward_bounds(0, FIXED)
    assert (reward_bounds(5, FIXED).format_min, reward_bounds(5, FIXED).correctness_max) == (0.0, 3.0)
    custom = RewardConfig(mode="fixed", format_range=(0.0, 2.0), correctness_range=(-1.0, 1.0))
    assert reward_bounds(0, custom).format_max == 2.0 and reward_bounds(0, custom).correctness_min == -1.0
    assert Ramp(0.0, 10.0, 20)(5) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        RewardConfig(mode="dynamic")
    with pytest.raises(ValueError):
        RewardConfig(correctness_range=(3.0, -3.0))
