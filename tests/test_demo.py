"""``restlit demo`` end to end on the tiny config: every stage runs and is accounted for."""

from __future__ import annotations

import json

from restlit.config import load_config
from tests.conftest import REPO


def test_demo_runs_every_stage_on_the_tiny_model(tmp_path):
    from restlit.experiments.demo import run_demo

    config = load_config(REPO / "configs" / "tiny-test.yaml",
                         [f"output_dir={tmp_path / 'demo'}", f"data.cache_dir={tmp_path / 'cache'}",
                          "trainer.max_steps=2", "sft.max_steps=2"])
    report = run_demo(config, heldout_limit=2, bfcl_limit=2, eval_tokens=8)
    assert report.is_file() and report.read_text().startswith("#")
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    stages = ["prepare", "eval base", "sft", "eval SFT", "fit", "eval ResT", "report", "total"]
    assert list(summary["seconds"]) == stages
    assert summary["seconds"]["total"] + 0.5 >= sum(summary["seconds"][s] for s in stages[:-1])  # each rounded
    assert list(summary["models"]) == ["base", "SFT", "ResT"]
    for scores in summary["models"].values():  # a tiny random model scores, but scores are real numbers
        assert all(0.0 <= v <= 1.0 for v in scores.values() if v is not None)
        assert scores["bfcl:simple_python/accuracy"] is not None
    # every accuracy comes with its item count and a 95% interval around it
    for name, cells in summary["intervals"].items():
        em = cells["heldout/exact_match"]
        assert em["n"] == 2 and 0 <= em["low"] <= em["value"] <= em["high"] <= 1
        assert em["value"] == summary["models"][name]["heldout/exact_match"]
        assert cells["bfcl:simple_python/accuracy"]["n"] == 2
        assert cells["heldout/exact_match"]["high"] > cells["heldout/exact_match"]["low"]  # 2 items: wide
    assert (tmp_path / "demo" / "base" / "config.json").is_file()  # the random initial policy, scored as "base"
    assert (tmp_path / "demo" / "sft" / "final" / "config.json").is_file()
    assert (tmp_path / "demo" / "final" / "config.json").is_file()
