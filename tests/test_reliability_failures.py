"""A failure is never reported as a success (issue 33): nonsense or non-finite config values are
refused at load, non-finite weights are never exported, a finished run whose export was lost gets
it on ``--resume``, skipped steps log only what they measured, two evaluations into one ``-o``
cannot race, and a held-out evaluation with no item is an error."""

from __future__ import annotations

import pytest

from restlit.config import ConfigError, load_config
from tests.test_reliability import TINY


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.inf", "optim.lr: must be a finite number, got inf"),
    ("optim.lr=.nan", "optim.lr: must be a finite number, got nan"),
    ("optim.eps=0", "optim.eps: must be > 0, got 0.0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0"),
    ("optim.grad_clip=.nan", "optim.grad_clip: must be a finite number"),
    ("optim.grad_clip=-1", "optim.grad_clip: must be >= 0 (0: no clipping)"),
    ("optim.betas=[0.9, 1.0]", "optim.betas: must be two numbers in [0, 1)"),
    ("optim.warmup_steps=-1", "optim.warmup_steps: must be >= 0"),
    ("objective.loss.kl_coef=.nan", "objective.loss.kl_coef: must be a finite number"),
    ("objective.loss.kl_coef=-0.1", "objective.loss.kl_coef: must be >= 0"),
    ("sft.lr=-1e-5", "sft.lr: must be > 0"),
    ("sft.lr=0", "sft.lr: must be > 0"),
    ("sft.lr=1e30", "sft.lr: must be <= 1"),
    ("optim.lr=10", "optim.lr: must be <= 1"),
    ("objective.weights.w_max=.inf", "objective.weights.w_max: must be a finite number"),
])
def test_nonsense_and_non_finite_values_are_refused_at_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_non_finite_weights_are_never_exported(tmp_path) -> None:
    import lightning as L
    import torch

    from restlit.errors import UserError
    from restlit.training.run import fit
    from tests.test_reliability import tiny

    class Poison(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            with torch.no_grad():
                next(pl_module.policy.parameters()).view(-1)[0] = float("nan")

    with pytest.raises(UserError, match="not finite") as info:
        fit(tiny(tmp_path, "trainer.max_steps=1"), callbacks=[Poison()])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "final").exists()


def test_resume_of_a_finished_run_exports_a_lost_final(tmp_path) -> None:
    import shutil

    from safetensors.torch import load_file

    from restlit.training.run import fit
    from tests.test_reliability import tiny

    config = tiny(tmp_path, "trainer.max_steps=1")
    run = fit(config)
    before = load_file(run / "final" / "model.safetensors")
    shutil.rmtree(run / "final")  # lost: SIGTERM during the export, a full disk
    fit(config, resume=True)
    after = load_file(run / "final" / "model.safetensors")
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    with pytest.raises(Exception, match="already finished"):  # final/ is there: nothing to do
        fit(config, resume=True)


def test_skipped_steps_log_only_what_they_measured(tmp_path) -> None:
    """Two of four steps have no advantage (every completion scores the same): their rows carry no loss,
    grad norm, lr or entropy of an earlier update, and the updating steps no ``skipped/...`` flag."""
    from restlit.training.run import fit
    from tests.test_reliability import rows, tiny
    from tests.training import constant_reward, even_token_reward

    def reward(completion, item, step):  # every other step has no advantage
        return (constant_reward if step % 2 else even_token_reward)(completion, item, step)

    run = fit(tiny(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every=100"), reward_fn=reward)
    by_step = {}
    for r in rows(run):
        if r.get("step"):
            by_step.setdefault(int(float(r["step"])), {}).update({k: v for k, v in r.items() if v != ""})
    assert sorted(by_step) == [0, 1, 2, 3]
    assert sorted(r["skipped"] for r in by_step.values()) == ["0.0", "0.0", "1.0", "1.0"]
    for r in by_step.values():
        if r["skipped"] == "1.0":
            assert r["skipped"] == "1.0" and r["skipped/no_advantage"] == "1.0", r
            assert not {"train/loss", "train/grad_norm", "train/lr"} & r.keys(), r
            assert not [k for k in r if k.startswith("entropy/")], r
        else:
            assert r["skipped"] == "0.0" and "skipped/no_advantage" not in r, r
            assert {"train/loss", "train/grad_norm", "train/lr"} <= r.keys(), r


def test_eval_locks_its_output_like_fit(tmp_path) -> None:
    """An ``-o`` another live process writes is refused in one line; its eval.json is untouched."""
    import json
    import socket
    import subprocess

    from restlit.runtime.outputs import LOCK_NAME
    from tests.test_reliability import one_line_error
    from tests.test_reliability_security import _eval

    prepared = _prepared(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        one_line_error(_eval(prepared, out), "in use by process", str(other.pid))
        assert not (out / "eval.json").exists()
    finally:
        other.kill()
        other.wait()
    assert _eval(prepared, out).exit_code == 0  # the stale lock is taken over
    assert not (out / LOCK_NAME).exists()


def _prepared(tmp_path):
    from restlit.data_prep.pipeline import prepare
    from tests.conftest import HAMMER, data_file

    out = tmp_path / "data"
    prepare([data_file(HAMMER)], out, val_fraction=0.5, workers=1)
    return out


def test_heldout_eval_with_no_item_is_an_error(tmp_path) -> None:
    from restlit.data_prep.pipeline import prepare
    from tests.conftest import HAMMER, data_file
    from tests.test_reliability import one_line_error
    from tests.test_reliability_security import _eval

    data = tmp_path / "data"
    prepare([data_file(HAMMER)], data, val_fraction=0.0, workers=1)  # an empty validation split
    one_line_error(_eval(data, tmp_path / "out"), "no item")
    assert not (tmp_path / "out" / "eval.json").exists()


def test_sft_refusal_does_not_suggest_resume(tmp_path) -> None:
    from tests.test_reliability import cli, one_line_error

    sft = tmp_path / "run" / "sft"
    sft.mkdir(parents=True)
    (sft / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    err = one_line_error(cli("sft", "--config", str(TINY), "--set", f"output_dir={tmp_path / 'run'}"),
                         "already holds a run", "--overwrite")
    assert "--resume" not in err


def test_a_fit_that_never_trained_does_not_block_a_rerun(tmp_path) -> None:
    """A fit that failed before its first step left config.yaml (and an empty metrics.csv): a rerun
    replaces them without --overwrite; a user's file there is still refused."""
    from restlit.config import save_config
    from restlit.runtime.outputs import OutputError
    from restlit.runtime.owned import record
    from restlit.training.checkpoints import claim_run_dir
    from tests.test_reliability import tiny

    config = tiny(tmp_path)
    run = tmp_path / "run"
    save_config(config, run / "config.yaml")
    (run / "metrics.csv").write_text("")
    record(run, ["config.yaml", "metrics.csv"])
    start, old = claim_run_dir(config, run, resume=False, overwrite=False)
    assert start == 0 and {p.name for p in old} >= {"config.yaml", "metrics.csv"}
    (run / "metrics.csv").write_text("step,loss\n0,1.0\n")  # a step was logged: a run to keep
    with pytest.raises(OutputError, match="already holds a run"):
        claim_run_dir(config, run, resume=False, overwrite=False)
