"""The testbed (restlit.experiments.testbed): the task generator, its tokenizer, the analysis, and
(slow) the whole pipeline at its smallest size through restlit's own commands."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from restlit.experiments.testbed import analysis
from restlit.experiments.testbed.tasks import FILLER, TOOLS, all_requests, filler, make_records, write_tasks
from restlit.experiments.testbed.tokenizer import records_text, train_tokenizer

VALUE_WORDS = {str(v).lower() for _, _, args in all_requests() for v in args.values() for v in str(v).split()}


def test_every_request_is_unique_and_its_answer_follows_from_it() -> None:
    items = list(all_requests())
    assert len({req for req, _, _ in items}) == len(items) > 1000
    names = {t["function"]["name"] for t in TOOLS}
    for req, tool, args in items:
        assert tool in names
        for value in args.values():  # every argument is spelled out in the request
            assert str(value) in req


def test_filler_has_the_length_asked_and_names_no_value() -> None:
    rng = random.Random(0)
    for words in (0, 1, 16, 64):
        text = filler(words, rng)
        assert len(text.split()) == words
    assert not {w.lower() for w in FILLER} & VALUE_WORDS
    recs = make_records(8, seed=1, limit=20)
    thinks = [r["messages"][1]["content"] for r in recs]
    assert all(len(t.removeprefix("<think>").removesuffix("</think>").split()) == 8 for t in thinks)
    assert make_records(0, limit=3)[0]["messages"][1]["content"] == "<think></think>"
    with pytest.raises(ValueError):
        make_records(-1)


def test_prepare_reads_the_records_and_the_splits_share_no_request(tmp_path: Path) -> None:
    from restlit.data_prep.pipeline import prepare
    from restlit.data_prep.samples import Sample, load_samples

    raw = write_tasks(tmp_path / "raw.jsonl", 4, seed=0, limit=300)
    with pytest.raises(FileExistsError):
        write_tasks(raw, 4)
    manifest = prepare([str(raw)], tmp_path / "data", format="chat", val_fraction=0.2, seed=0)
    assert manifest.totals.samples_written == 300
    splits = {name: [Sample.from_row(r) for r in rows] for name, rows in load_samples(tmp_path / "data").items()}
    requests = {name: {s.history[-1]["content"] for s in samples} for name, samples in splits.items()}
    assert requests["train"] and requests["validation"]
    assert not requests["train"] & requests["validation"]
    # the round trip: the prepared target is the generated answer, call and think part
    by_request = {r["messages"][0]["content"]: r for r in map(json.loads, raw.read_text().splitlines())}
    for s in splits["validation"]:
        rec = by_request[s.history[-1]["content"]]
        call = rec["messages"][1]["tool_calls"][0]["function"]
        assert [(c["name"], c["arguments"]) for c in s.target["calls"]] == [(call["name"], json.loads(call["arguments"]))]
        assert s.target["think"] == rec["messages"][1]["content"][len("<think>"):-len("</think>")].strip()


def test_tokenizer_round_trips_the_task_text_exactly() -> None:
    recs = make_records(16, seed=2, limit=200)
    tok = train_tokenizer(records_text(recs), vocab_size=400)
    assert len(tok) == 400
    for text in [*records_text(recs[:50]), "Unseen text: ünïcode ✓ {\"a\": 1}\n\t end"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    prompt = tok.apply_chat_template([{"role": "system", "content": "tools"}, {"role": "user", "content": "hi"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>hi<|end|><|assistant|>"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"


def test_auc_and_steps_to_threshold_hand_computed() -> None:
    # (0.2 + 0.4) / 2 * 25 + (0.4 + 0.4) / 2 * 25 + (0.4 + 0.8) / 2 * 50 = 7.5 + 10 + 30 = 47.5, / 100
    assert analysis.curve_auc([0, 25, 50, 100], [0.2, 0.4, 0.4, 0.8]) == pytest.approx(0.475)
    assert analysis.steps_to_threshold([0, 25, 50, 100], [0.2, 0.4, 0.4, 0.8], 0.4) == 25
    assert analysis.steps_to_threshold([0, 25, 50, 100], [0.2, 0.4, 0.4, 0.8], 0.9) == 150  # censored
    with pytest.raises(ValueError):
        analysis.curve_auc([0], [0.5])


@pytest.mark.slow
def test_testbed_end_to_end_at_its_smallest_size(tmp_path: Path) -> None:
    """prepare -> sft -> ablate (three arms, two paired seeds) -> diagnose variance -> tables, for
    two think lengths, through restlit's own commands (benchmarks/bench_testbed.py --smallest)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "tb"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_testbed.py"), "--smallest", "--out", str(out),
                           "--no-record"], capture_output=True, text=True, cwd=REPO, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "testbed.json").read_text())
    assert set(results) == {"0", "8"}
    for res in results.values():
        assert set(res["arms"]) == {"grpo", "rest", "top-entropy"}
        assert all(row["seeds"] == 2 for row in res["arms"].values())
        assert {"rest - grpo", "top-entropy - grpo", "top-entropy - rest"} == set(res["pairs"])
        assert [row["step"] for row in res["variance"]] == [0, 2]
        assert {"entropy", "top-entropy"} <= set(res["variance"][0])
        for seeds in res["curves"].values():
            assert all(c["steps"] == [0, 1, 2] for c in seeds.values())
    assert "| rest - grpo |" in proc.stdout


def test_sft_stages_count_their_steps_when_a_resumed_run_changes_the_stage_size(tmp_path: Path, monkeypatch) -> None:
    """SFT to partial competence goes in stages; a run resumed with smaller stages (to stop nearer
    the target after a large jump) records each stage's cumulative steps, not stage x new size."""
    import dataclasses

    from restlit.experiments.testbed import driver

    scores = iter([0.2, 0.5])

    def fake_restlit(args, **kwargs):
        args = [str(a) for a in args]
        if args[0] == "sft":
            out = Path(next(a for a in args if a.startswith("output_dir=")).split("=", 1)[1])
            (out / "sft" / "final").mkdir(parents=True)
            (out / "sft" / "final" / "config.json").write_text("{}")
        else:
            out = Path(args[args.index("-o") + 1])
            out.mkdir(parents=True)
            (out / "eval.json").write_text(json.dumps({"summary": {"heldout": {"exact_match": next(scores)}}}))

    monkeypatch.setattr(driver, "restlit", fake_restlit)
    d = tmp_path / "L8"
    d.mkdir()
    (d / "sft-stages.json").write_text(json.dumps([{"stage": 0, "steps": 60, "exact_match": 0.0}]))
    (d / "sft-stage0" / "sft" / "final").mkdir(parents=True)
    size = dataclasses.replace(driver.Size(), sft_steps=20, sft_target=0.3, sft_stages=8)
    final = driver.sft(tmp_path, size, 8, log=lambda _: None)
    stages = json.loads((d / "sft-stages.json").read_text())
    assert [(s["stage"], s["steps"]) for s in stages] == [(0, 60), (1, 80), (2, 100)]
    assert final.resolve() == (d / "sft-stage2" / "sft" / "final").resolve()
