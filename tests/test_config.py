"""``restlit.config``: the shipped configs, one-line errors naming the key, overrides, the round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from restlit.config import ConfigError, load_config
from tests.conftest import REPO
from tests.training import TINY


def test_shipped_configs_validate():
    for name in ("tiny-test.yaml", "quickstart-cpu.yaml", "qwen3-4b-fsdp.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.rollout.n >= 1 and cfg.trainer.max_steps >= 1

@pytest.mark.parametrize(
    "override, message",
    [
        ("objective.weights.mode=entropi", "objective.weights.mode: 'entropi' is not allowed; choose one of: uniform, static, entropy, top-entropy"),
        ("optim.lrr=1", "optim.lrr: unknown key; allowed: lr,"),
        ("rollout.n=many", "rollout.n: expected an integer, got 'many'"),
        ("objective.weights.delta=-1", "objective.weights: delta must be > 0"),
        ("optim", "expected KEY=VALUE"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    assert message in str(err.value) and "\n" not in str(err.value)

def test_overrides_and_roundtrip(tmp_path):
    from restlit.config import save_config

    cfg = load_config(TINY, ["optim.lr=2e-6", "rollout.stop=['</tool_call>']", "trainer.devices=auto"])
    assert cfg.optim.lr == 2e-6 and cfg.rollout.stop == ["</tool_call>"] and cfg.trainer.devices == "auto"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg

def test_cli_fit_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: fast}\n")
    out = subprocess.run([sys.executable, "-m", "restlit.cli.main", "fit", "--config", str(bad)], capture_output=True,
                         text=True, cwd=REPO, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: optim.lr: expected a number, got 'fast'"


def test_rollout_section_gives_the_engine_its_sampling():
    """``RolloutConfig.sampling(seed)``: every ``SamplingConfig`` field but the seed comes from the
    rollout section (one field list), and the stop list is the engine's own copy."""
    import dataclasses

    from restlit.rollout.base import SamplingConfig

    cfg = load_config(TINY, ["rollout.n=3", "rollout.max_new_tokens=7", "rollout.temperature=0.5",
                             "rollout.top_p=0.9", "rollout.stop=['</tool_call>']"])
    sampling = cfg.rollout.sampling(11)
    assert sampling == SamplingConfig(n=3, max_new_tokens=7, temperature=0.5, top_p=0.9, stop=["</tool_call>"],
                                      seed=11)
    assert {f.name for f in dataclasses.fields(SamplingConfig)} - {"seed"} <= {
        f.name for f in dataclasses.fields(type(cfg.rollout))}
    sampling.stop.append("x")
    assert cfg.rollout.stop == ["</tool_call>"]
    assert cfg.rollout.sampling(None).seed is None


def test_curriculum_by_none_is_a_choice():
    assert load_config(TINY, ["objective.curriculum.by=none"]).objective.curriculum.by == "none"
    with pytest.raises(ConfigError, match="choose one of: step, entropy, none"):
        load_config(TINY, ["objective.curriculum.by=never"])
