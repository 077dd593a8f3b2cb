"""Training in an output format other than ToolRL's: a fit and an SFT run in ``hermes`` and in
``pythonic`` on the tiny config, the format recorded with the exported model, and a ToolRL-format
prepared dataset trained in ``hermes`` unchanged."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from restlit.formats import get_format
from tests.training import read_metrics, tiny_config

pytestmark = pytest.mark.slow


def _check_final(final: Path, name: str) -> None:
    from transformers import AutoTokenizer

    assert json.loads((final / "restlit.json").read_text())["tool_format"] == name
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template == get_format(name).chat_template  # SmolLM2's own template takes no tools


@pytest.mark.parametrize("name", ["hermes", "pythonic"])
def test_fit_in_a_format(tmp_path, name):
    from restlit.training.run import fit

    run_dir = fit(tiny_config(tmp_path, "trainer.max_steps=2", f"data.tool_format={name}", "rollout.max_new_tokens=16"))
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert all(math.isfinite(r["reward/total"]) for r in rows)
    _check_final(run_dir / "final", name)


@pytest.mark.parametrize("name", ["hermes", "pythonic"])
def test_sft_in_a_format(tmp_path, name):
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy, sft

    cfg = tiny_config(tmp_path, "sft.max_steps=2", "sft.batch_size=2", f"data.tool_format={name}")
    tok, _ = build_tokenizer_and_policy(cfg)
    data = ToolUseDataModule(cfg.data, tok)
    data.prepare_data()
    data.setup()
    fmt = get_format(name)
    for item in data.train_items:
        assert item.target_text == fmt.render_target(item.target)
        if _expressible(name, item.target["calls"]):
            assert fmt.parse(item.target_text) == item.target["calls"]
    run_dir = sft(cfg)
    assert len([r for r in read_metrics(run_dir) if "sft/loss" in r]) == 2
    _check_final(run_dir / "final", name)


def _expressible(name: str, calls: list[dict]) -> bool:
    """Whether the format can write these calls: pythonic needs Python identifiers for names and keys."""
    return name != "pythonic" or all(all(p.isidentifier() for p in c["name"].split(".")) and
                                     all(str(k).isidentifier() for k in c["arguments"]) for c in calls)


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_a_toolrl_prepared_dataset_trains_in_hermes_unchanged(tmp_path):
    from restlit.data_prep.pipeline import prepare
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy, sft

    prepared = tmp_path / "prepared"
    prepare([str(Path(__file__).parent / "fixtures" / "toolrl_tiny.json")], prepared, val_fraction=0.1)
    before = _digest(prepared)
    cfg = tiny_config(tmp_path, f"data.prepared={prepared}", "data.raw=[]", "data.tool_format=hermes",
                      "sft.max_steps=1", "sft.batch_size=2")
    tok, _ = build_tokenizer_and_policy(cfg)
    data = ToolUseDataModule(cfg.data, tok)
    data.setup()
    prompt = tok.decode(data.train_items[0].prompt_ids)
    assert "<tools>" in prompt and "<|im_start|>assistant\n" in prompt and "<think> " not in prompt
    hermes = get_format("hermes")
    assert all(not it.target_text.endswith("</response>") and hermes.parse(it.target_text) == it.target["calls"]
               for it in data.train_items)
    sft(cfg)
    assert _digest(prepared) == before
