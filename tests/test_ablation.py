"""``restlit ablate``: arms share the start, the prompts and the seeds and differ only in their
overrides; results, table and curves are written; a rerun skips finished arms."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from restlit.config import ConfigError, load_config, to_dict
from restlit.experiments.ablation import (
    DEFAULT_ARMS,
    item_scores,
    make_plan,
    markdown,
    parse_arm,
    run_ablation,
    summarize,
)
from restlit.rewards import Reward, RewardBounds
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"


def _overrides(tmp_path):
    return [f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=2", "ablation.eval_limit=2",
            "ablation.eval_tokens=6", "ablation.eval_every=1", "logging.tensorboard=false"]


ARMS = ["grpo:objective.weights.mode=uniform", "rest:objective.weights.mode=entropy,objective.curriculum.by=step"]


class Recorder:
    """A reward that varies per sample (so updates happen) and records what each arm saw."""

    def __init__(self):
        self.seen: list[tuple[str, int, str, tuple[int, ...]]] = []
        self.arm = ""

    def __call__(self, completion, item, step):
        self.seen.append((self.arm, step, item.id, tuple(completion.token_ids)))
        share = sum(1 for t in completion.token_ids if t % 2 == 0) / max(len(completion.token_ids), 1)
        return Reward(0.0, share, share, RewardBounds(0.0, 0.0, 0.0, 1.0))


def test_parse_arm_and_refusals():
    assert parse_arm("a:x.y=1,data_free=[1,2],z=3") == ("a", ["x.y=1", "data_free=[1,2]", "z=3"])
    with pytest.raises(ConfigError, match="NAME:KEY=VALUE"):
        parse_arm("no-colon")
    with pytest.raises(ConfigError, match="all arms share"):
        make_plan(TINY, arms=["bad:trainer.max_steps=9"])
    with pytest.raises(ConfigError, match="arm 'typo'.*entropi"):
        make_plan(TINY, arms=["typo:objective.weights.mode=entropi"])
    with pytest.raises(ConfigError, match="ablation.suites"):
        make_plan(TINY, ["ablation.suites=[nope]"])
    plan = make_plan(TINY)
    assert list(plan.arms) == list(DEFAULT_ARMS) and plan.baseline == "grpo"
    # every default arm resolves, entropy-no-curriculum with its priors frozen
    assert plan.arm_config("entropy-no-curriculum", 0).objective.curriculum.by == "none"
    assert plan.arm_config("rest-fixed-reward", 0).reward.mode == "fixed"


def test_ablate_two_arms_share_start_prompts_and_seeds_and_resume_skips(tmp_path):
    out = tmp_path / "abl"
    plan = make_plan(TINY, _overrides(tmp_path), arms=ARMS, out=out)
    # the resolved configs differ only in the arm's overrides and the run directory
    a, b = (to_dict(plan.arm_config(arm, 0)) for arm in plan.arms)
    diff = {(s, k) for s in a for k in (a[s] if isinstance(a[s], dict) else {None: 0}) if
            (a[s].get(k) if isinstance(a[s], dict) else a[s]) != (b[s].get(k) if isinstance(b[s], dict) else b[s])}
    assert diff == {("objective", "weights"), ("output_dir", None)}

    reward = Recorder()
    logs = []

    def log(message):
        logs.append(message)
        reward.arm = message.split()[0]

    run_ablation(plan, reward_fn=reward, log=log)
    # same prompts, same order, same rollout seeds: at step 1 (same start weights) identical samples
    per_arm = {arm: [(s, i, t) for a_, s, i, t in reward.seen if a_ == arm] for arm in plan.arms}
    assert [x[:2] for x in per_arm["grpo"]] == [x[:2] for x in per_arm["rest"]]
    step1 = {arm: [x for x in seen if x[0] == 1] for arm, seen in per_arm.items()}
    assert step1["grpo"] == step1["rest"] and step1["grpo"]
    # the start model (the tiny config's random init) was saved once and every arm loaded it
    assert {plan.arm_config(arm, 0).model.path for arm in plan.arms} == {str(out / "start" / "model")}

    summary = json.loads((out / "ablation.json").read_text())
    assert list(summary["arms"]) == ["grpo", "rest"] and summary["unfinished"] == []
    for row in summary["arms"].values():
        assert list(row["curve"]) == ["0", "1", "2"]  # the start, then every step (eval_every 1)
        assert list(row["train_reward"]) == ["1", "2"]
        em = row["heldout/exact_match"]
        assert 0 <= em["low"] <= em["value"] <= em["high"] <= 1 and em["n"] == 2
    assert "heldout/paired_vs_grpo" in summary["arms"]["rest"]
    assert "| rest |" in (out / "ablation.md").read_text()
    assert (out / "reward.png").stat().st_size > 0 and (out / "heldout.png").stat().st_size > 0

    # a rerun skips the finished arms and trains nothing
    reward.seen.clear()
    logs.clear()
    run_ablation(make_plan(TINY, _overrides(tmp_path), arms=ARMS, out=out), reward_fn=reward, log=log)
    assert reward.seen == [] and all("skipped" in m for m in logs)
    # another plan into the same directory is refused, nothing overwritten
    with pytest.raises(ConfigError, match="another config"):
        run_ablation(make_plan(TINY, _overrides(tmp_path), arms=ARMS[:1], out=out), reward_fn=reward, log=log)


def test_summary_pairs_items_and_averages_seeds(tmp_path):
    """Two seeds per arm, hand-made results: means over seeds, t intervals, paired per-item difference."""
    plan = make_plan(TINY, ["ablation.suites=[heldout]"], arms=ARMS, seeds=2, out=tmp_path)

    def record(step, passed):
        n = len(passed)
        items = {"accuracy": passed, "exact_match": passed, "format_validity": [1.0] * n,
                 "tool_name_accuracy": passed, "param_tp": passed, "param_pred": [1.0] * n, "param_gold": [1.0] * n}
        em = sum(passed) / n
        return {"step": step, "summary": {"heldout": {"exact_match": em, "format_validity": 1.0,
                                                      "tool_name_accuracy": em, "param_f1": em}},
                "items": {"heldout": items}}

    scores = {("grpo", 0): [0, 0, 1, 0], ("grpo", 1): [0, 1, 0, 0], ("rest", 0): [1, 1, 1, 0], ("rest", 1): [1, 1, 0, 1]}
    for (arm, seed), passed in scores.items():
        d = plan.run_dir(arm, seed)
        d.mkdir(parents=True)
        evals = [record(1, [0.0] * 4), record(2, [float(x) for x in passed])]
        (d / "result.json").write_text(json.dumps({"evals": evals, "train": [{"step": 1, "reward": 0.5}]}))
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "evals.jsonl").write_text(json.dumps(record(0, [0.0, 0.0, 0.0, 1.0])) + "\n")
    summary = summarize(plan)
    rest = summary["arms"]["rest"]
    # against the shared start, item by item: (1, 1, .5, .5) - (0, 0, 0, 1)
    start = rest["heldout/paired_vs_start"]
    assert start["difference"]["value"] == pytest.approx(0.5) and (start["wins"], start["losses"]) == (3, 1)
    assert summary["arms"]["grpo"]["curve"] == {"0": 0.25, "1": 0.0, "2": 0.25}  # the start is step 0
    assert rest["heldout/exact_match"]["value"] == pytest.approx(0.75) and rest["heldout/exact_match"]["over"] == "seeds"
    assert rest["heldout/best_exact_match"]["value"] == pytest.approx(0.75)
    diff = rest["heldout/paired_vs_grpo"]
    # per item, mean over seeds: rest (1, 1, .5, .5) - grpo (0, .5, .5, 0) = (1, .5, 0, .5)
    assert diff["difference"]["value"] == pytest.approx(0.5) and (diff["wins"], diff["losses"]) == (3, 0)
    assert "+50.0" in markdown(summary)


def test_item_scores_reads_the_evaluation_records():
    result = {"items": [
        {"suite": "heldout", "id": "a", "passed": True, "format_valid": True, "names_ok": True, "param_tp": 1,
         "param_pred": 1, "param_gold": 1, "expects_call": True},
        {"suite": "heldout", "id": "b", "passed": False, "format_valid": False, "names_ok": True, "param_tp": 0,
         "param_pred": 0, "param_gold": 0, "expects_call": False},
        {"suite": "bfcl:simple_python", "id": "c", "passed": False}]}
    scores = item_scores(result)
    assert scores["heldout"]["tool_name_accuracy"] == [1.0, None]
    assert scores["bfcl:simple_python"] == {"accuracy": [0.0]}


def test_cli_ablate_bad_arm_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "restlit.cli.main", "ablate", "--config", str(TINY), "--arm", "x:model.path=y",
                           "-o", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "all arms share" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_curriculum_none_freezes_progress(tmp_path):
    from restlit.training.curriculum import EntropyCurriculum

    config = load_config(TINY, ["objective.curriculum.by=none"])
    assert config.objective.curriculum.by == "none"
    cur = EntropyCurriculum(config.objective.curriculum, max_steps=4)

    import torch

    for s in range(4):
        cur.observe(torch.ones(2, 7, dtype=torch.float64))
        assert cur.progress_at(s) == 0.0
    assert cur.progress == 0.0 and cur.steps == 4  # four steps observed, none advanced the curriculum


def test_table_shows_every_suites_start_score_and_change_from_the_start(tmp_path):
    """A suite besides heldout (e.g. BFCL) gets the start model's score in the start row and each arm's
    paired change against the start: the question "did RL lower BFCL?" is answered by the table."""
    plan = make_plan(TINY, ["ablation.suites=[heldout,bfcl:simple_python]"], arms=ARMS[:1], seeds=1, out=tmp_path)

    def record(step, heldout, bfcl):
        held = {"accuracy": heldout, "exact_match": heldout, "format_validity": heldout,
                "tool_name_accuracy": heldout, "param_tp": heldout, "param_pred": [1.0] * 4, "param_gold": [1.0] * 4}
        return {"step": step,
                "summary": {"heldout": {"exact_match": sum(heldout) / 4, "format_validity": sum(heldout) / 4,
                                        "tool_name_accuracy": sum(heldout) / 4, "param_f1": sum(heldout) / 4},
                            "bfcl:simple_python": {"accuracy": sum(bfcl) / 4}},
                "items": {"heldout": held, "bfcl:simple_python": {"accuracy": bfcl}}}

    d = plan.run_dir("grpo", 0)
    d.mkdir(parents=True)
    final = record(2, [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    (d / "result.json").write_text(json.dumps({"evals": [final], "train": [{"step": 1, "reward": 0.5}]}))
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "evals.jsonl").write_text(json.dumps(record(0, [0.0] * 4, [1.0, 1.0, 0.0, 1.0])) + "\n")
    table = markdown(summarize(plan))
    header, _, grpo, start = table.split("\n\n")[0].split("\n")
    cols = [c.strip() for c in header.strip("|").split("|")]
    grpo_cells = dict(zip(cols, (c.strip() for c in grpo.strip("|").split("|"))))
    start_cells = dict(zip(cols, (c.strip() for c in start.strip("|").split("|"))))
    assert len(start_cells) == len(cols) == len(grpo_cells)
    assert start_cells["bfcl:simple_python %"] == "75.0"
    assert grpo_cells["bfcl:simple_python vs start, p"].startswith("-50.0") and "(0+/2-)" in grpo_cells[
        "bfcl:simple_python vs start, p"]
