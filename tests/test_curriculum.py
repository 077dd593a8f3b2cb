"""``restlit.curriculum``: one progress definition, used and logged alike (nu = s / (T - 1)),
skipped steps that leave the entropy curriculum alone, ``by: none``, and the state's arithmetic."""

from __future__ import annotations

import pytest
import torch

from restlit.config import CurriculumConfig
from restlit.objective import NUM_REGIONS, WeightConfig, region_priors
from restlit.regions import Region
from restlit.training.curriculum import EntropyCurriculum, structured_entropy
from tests.training import constant_reward, curriculum_state, even_token_reward, read_metrics, tiny_config


def stats(entropy: dict[Region, tuple[float, float]]) -> torch.Tensor:
    """``[2, R]`` statistics from ``{region: (mean entropy, count)}``."""
    out = torch.zeros(2, NUM_REGIONS, dtype=torch.float64)
    for region, (mean, count) in entropy.items():
        out[0, region], out[1, region] = mean * count, count
    return out


def test_the_progress_a_step_uses_is_the_one_it_logs(tmp_path, monkeypatch):
    """``by: step``: step s of T (0-based) uses and logs nu = s / (T - 1), so the last step uses 1."""
    from restlit.training import module
    from restlit.training.run import fit

    used = []
    original = module.token_weights

    def spy(*args, **kwargs):
        used.append(kwargs["progress"])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "token_weights", spy)
    cfg = tiny_config(tmp_path, "trainer.max_steps=3", "trainer.prompts_per_step=1")
    rows = read_metrics(fit(cfg, reward_fn=even_token_reward))
    assert all(r["skipped"] == 0.0 for r in rows)
    logged = [r["curriculum/progress"] for r in rows]
    assert logged == pytest.approx([0.0, 0.5, 1.0])
    assert used == pytest.approx(logged)  # one group per step: one weights call per step

def test_skipped_steps_do_not_move_the_entropy_curriculum(tmp_path):
    """Steps that train nothing (all groups have equal rewards) fold no entropies into the running
    statistics and do not advance ``by: entropy`` progress."""
    from restlit.training.run import fit

    cfg = tiny_config(tmp_path, "trainer.max_steps=3", "objective.curriculum.by=entropy",
                      "objective.curriculum.tolerance=1e9", "trainer.checkpoint_every=10")
    run_dir = fit(cfg, reward_fn=constant_reward)
    rows = read_metrics(run_dir)
    assert all(r["skipped/no_advantage"] == 1.0 for r in rows)
    state = curriculum_state(run_dir)
    assert state["steps"] == 0 and state["progress"] == 0.0
    assert float(state["running"].abs().sum()) == 0.0
    assert all(r["curriculum/progress"] == 0.0 for r in rows)

def test_skipped_steps_still_follow_the_step_counter_by_step(tmp_path):
    """``by: step`` progress is a function of the step counter, skipped steps included."""
    from restlit.training.run import fit

    rows = read_metrics(fit(tiny_config(tmp_path, "trainer.max_steps=3"), reward_fn=constant_reward))
    assert all(r["skipped/no_advantage"] == 1.0 for r in rows)
    assert [r["curriculum/progress"] for r in rows] == pytest.approx([0.0, 0.5, 1.0])


def test_by_none_freezes_the_priors_at_the_start(tmp_path):
    """``by: none`` (the ablation arm entropy-no-curriculum): nu = 0 at every step, and the logged
    priors are those at nu = 0."""
    from restlit.training.run import fit

    rows = read_metrics(fit(tiny_config(tmp_path, "trainer.max_steps=2", "objective.curriculum.by=none"),
                            reward_fn=even_token_reward))
    start = region_priors(0.0, WeightConfig())
    for row in rows:
        assert row["curriculum/progress"] == 0.0
        for region in Region:
            assert row[f"curriculum/prior/{region.name}"] == pytest.approx(float(start[region]))


def test_progress_by_step_reaches_one_at_the_last_step():
    cur = EntropyCurriculum(CurriculumConfig(by="step"), max_steps=5)
    assert [cur.progress_at(s) for s in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert cur.progress_at(9) == 1.0
    assert EntropyCurriculum(CurriculumConfig(by="step", total_steps=3), max_steps=5).progress_at(2) == 1.0
    assert EntropyCurriculum(CurriculumConfig(by="step"), max_steps=1).progress_at(0) == 1.0
    assert EntropyCurriculum(CurriculumConfig(by="none"), max_steps=5).progress_at(4) == 0.0


def test_progress_by_entropy_advances_only_on_stable_steps():
    """Relative change of the structured entropy <= tolerance: + 1 / (T - 1); the first observed
    step has nothing to compare with."""
    cur = EntropyCurriculum(CurriculumConfig(by="entropy", tolerance=0.1), max_steps=3)
    cur.observe(stats({Region.TOOL_NAME: (1.0, 2), Region.THINK: (5.0, 4)}))
    assert cur.progress_at(0) == 0.0
    cur.observe(stats({Region.TOOL_NAME: (1.05, 2), Region.THINK: (0.1, 4)}))  # 5% change: stable
    assert cur.progress_at(1) == pytest.approx(0.5)
    cur.observe(stats({Region.TOOL_NAME: (2.0, 2)}))  # 90% change: not stable
    assert cur.progress_at(2) == pytest.approx(0.5)
    cur.observe(stats({Region.TOOL_NAME: (2.0, 2)}))
    cur.observe(stats({Region.TOOL_NAME: (2.0, 2)}))
    assert cur.progress == 1.0 and cur.steps == 5  # capped at 1


def test_running_statistics_and_state_round_trip():
    cur = EntropyCurriculum(CurriculumConfig(ema=0.5), max_steps=4)
    first = stats({Region.FORMAT: (2.0, 4), Region.PARAM_VALUE: (1.0, 2)})
    second = stats({Region.FORMAT: (0.0, 2)})
    assert torch.equal(cur.observe(first), first)  # the first step: its own statistics
    running = cur.observe(second)
    assert torch.allclose(running, 0.5 * first + 0.5 * second)
    assert structured_entropy(running) == pytest.approx((4.0 + 1.0) / (3 + 1))
    metrics = cur.metrics(1, WeightConfig())
    assert metrics["curriculum/progress"] == pytest.approx(1 / 3)
    assert metrics["entropy/FORMAT"] == pytest.approx(4.0 / 3)
    assert metrics["curriculum/prior/FORMAT"] == pytest.approx(float(region_priors(1 / 3)[Region.FORMAT]))
    other = EntropyCurriculum(CurriculumConfig(ema=0.5), max_steps=4)
    other.load_state_dict(cur.state_dict())
    assert torch.equal(other.running, cur.running) and other.steps == 2
    assert other.last_structured == cur.last_structured


def test_logged_priors_follow_the_weight_mode():
    """``entropy``: the priors at the step's nu; ``static``: the released constants at reward step
    s + 1; ``uniform``: no priors."""
    from restlit.objective import static_region_weights

    cur = EntropyCurriculum(CurriculumConfig(), max_steps=3)
    entropy = cur.metrics(2, WeightConfig(mode="entropy"))
    assert entropy["curriculum/prior/FORMAT"] == pytest.approx(float(region_priors(1.0)[Region.FORMAT]))
    static = cur.metrics(2, WeightConfig(mode="static"))
    assert static["curriculum/prior/PARAM_NAME"] == pytest.approx(0.6 + 0.002 * 3)
    assert static["curriculum/prior/OTHER"] == float(static_region_weights(3)[Region.OTHER]) == 0.0
    uniform = cur.metrics(2, WeightConfig(mode="uniform"))
    assert not any(k.startswith("curriculum/prior/") for k in uniform) and "entropy/THINK" in uniform
