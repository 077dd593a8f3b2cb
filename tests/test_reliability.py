"""A user's run is never lost, and every user mistake ends in one line (issue: output safety).

Each case was a failure before the fix: metrics.csv deleted on --resume, a second fit silently
overwriting the first, two writers in one directory, a full disk as a traceback, nonsense config
values accepted, a non-model directory as a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from restlit.config import ConfigError, load_config
from restlit.errors import UserError
from restlit.runtime.outputs import LOCK_NAME, OutputError, lock
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def tiny(tmp_path: Path, *overrides: str, name: str = "run"):
    return load_config(TINY, [f"output_dir={tmp_path / name}", f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def steps(run_dir: Path) -> list[int]:
    return [int(float(r["step"])) for r in rows(run_dir)]


def cli(*args: str):
    from restlit.cli.main import app

    return CliRunner().invoke(app, list(args))


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()  # Lightning's INFO lines may come first
    err = lines[-1] if lines else ""
    assert err.startswith("error: ") and "Traceback" not in result.output, result.output
    assert [line for line in lines if line.startswith("error")] == [err]
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    """A finished two-step fit (checkpoints at steps 1 and 2), copied by the tests that change it."""
    from restlit.training.run import fit

    base = tmp_path_factory.mktemp("base")
    return fit(tiny(base, "trainer.max_steps=2", "trainer.checkpoint_every=1"))


def copy_run(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def cli_fit(run: Path, tmp_path: Path, *args: str):
    return cli("fit", "--config", str(TINY), "--set", f"output_dir={run}", "--set",
               f"data.cache_dir={tmp_path / 'cache'}", *args)


# ---------------------------------------------------------------- resume keeps metrics.csv


@pytest.mark.slow
def test_kill_then_resume_keeps_the_rows_before_the_checkpoint(tmp_path):
    """kill -9 after step=2.ckpt, then --resume: the rows of the steps the checkpoint holds stay as they
    were, the rows of steps after it are dropped (the resumed run logs them again), and every step has
    exactly one row. The dead process's lock file is taken over."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "restlit.cli.main", "fit", "--config", str(TINY), "--set", f"output_dir={run}",
           "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "trainer.max_steps=40",
           "--set", "trainer.checkpoint_every=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not ((run / "checkpoints" / "step=2.ckpt").is_file() and (run / "metrics.csv").is_file()
                   and 1 in steps(run)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert (run / LOCK_NAME).is_file()  # left behind by the killed writer
    k = int(torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"])
    before = {int(float(r["step"])): r for r in rows(run)}
    assert set(range(k)) <= set(before)

    from restlit.training.run import fit

    fit(tiny(tmp_path, f"trainer.max_steps={k + 2}", "trainer.checkpoint_every=1"), resume=True)
    after = rows(run)
    assert steps(run) == list(range(k + 2))
    for r in after[:k]:  # untouched: the same values as before the kill
        assert r == before[int(float(r["step"]))]
    assert not (run / LOCK_NAME).exists()


def test_resume_of_a_finished_run_fails_in_one_line_and_keeps_metrics(two_step_run, tmp_path):
    run = copy_run(two_step_run, tmp_path)
    before = (run / "metrics.csv").read_bytes()
    err = one_line_error(cli_fit(run, tmp_path, "--set", "trainer.max_steps=2", "--set",
                                 "trainer.checkpoint_every=1", "--resume"), "already finished at step 2")
    assert "trainer.max_steps" in err
    assert (run / "metrics.csv").read_bytes() == before


def test_resume_from_a_truncated_checkpoint_fails_in_one_line_and_keeps_metrics(two_step_run, tmp_path):
    run = copy_run(two_step_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = (run / "metrics.csv").read_bytes()
    one_line_error(cli_fit(run, tmp_path, "--set", "trainer.max_steps=4", "--set", "trainer.checkpoint_every=1",
                           "--resume"), str(last), "truncated")
    assert (run / "metrics.csv").read_bytes() == before


def test_resume_with_a_changed_config_lists_the_keys_and_keeps_metrics(two_step_run, tmp_path):
    run = copy_run(two_step_run, tmp_path)
    before = (run / "metrics.csv").read_bytes()
    err = one_line_error(cli_fit(run, tmp_path, "--set", "trainer.max_steps=4", "--set", "trainer.checkpoint_every=1",
                                 "--set", "model.architecture.hidden_size=32", "--set", "optim.lr=0.5",
                                 "--resume"), "model.architecture.hidden_size", "optim.lr")
    assert "trainer.max_steps" not in err
    assert (run / "metrics.csv").read_bytes() == before


def test_resume_continues_and_appends_after_the_checkpoint(two_step_run, tmp_path):
    """Keys a resume may change (max_steps, logging, checkpoint_every) do not block it; the rows of
    the first run stay byte for byte and the new steps are appended."""
    run = copy_run(two_step_run, tmp_path)
    first = rows(run)
    result = cli_fit(run, tmp_path, "--set", "trainer.max_steps=3", "--set", "trainer.checkpoint_every=5",
                     "--set", "logging.tensorboard=false", "--resume")
    assert result.exit_code == 0, (result.output, result.exception)
    assert steps(run) == [0, 1, 2]
    assert rows(run)[:2] == first


def test_rows_after_the_checkpoint_are_dropped_and_gaps_reported(tmp_path):
    from restlit.training.loggers import keep_rows_before

    run = tmp_path
    (run / "metrics.csv").write_text("a,step\n1.0,0\n2.0,2\n3.0,3\n")
    assert keep_rows_before(run, 3) == [1]  # step 1's row never reached the disk
    assert (run / "metrics.csv").read_text().splitlines() == ["a,step", "1.0,0", "2.0,2"]


# ---------------------------------------------------------------- no silent overwrite


def test_fit_and_sft_into_a_used_output_dir_refuse_without_overwrite(two_step_run, tmp_path):
    run = copy_run(two_step_run, tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    one_line_error(cli_fit(run, tmp_path), f"{run} already holds a run; use --resume, another output_dir, or --overwrite")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    (run / "sft").mkdir()
    (run / "sft" / "metrics.csv").write_text("step\n0\n")
    one_line_error(cli("sft", "--config", str(TINY), "--set", f"output_dir={run}"), f"{run / 'sft'} already holds a run")


def test_overwrite_leaves_no_older_checkpoint_for_a_later_resume(tmp_path):
    """A second fit with --overwrite and fewer steps: no checkpoint of the first run survives (today
    the old last.ckpt at step 4 stayed, and a later --resume loaded it)."""
    from restlit.training.run import fit

    fit(tiny(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every=2"))
    run = fit(tiny(tmp_path, "trainer.max_steps=1", "trainer.checkpoint_every=3"), overwrite=True)
    left = {p.name: torch.load(p, weights_only=False)["global_step"] for p in (run / "checkpoints").glob("*.ckpt")}
    assert left and all(step <= 1 for step in left.values()), left  # only the new run's
    assert steps(run) == [0]
    one_line_error(cli_fit(run, tmp_path, "--set", "trainer.max_steps=1", "--set", "trainer.checkpoint_every=3",
                           "--resume"), "already finished at step 1")


# ---------------------------------------------------------------- one writer per directory


def test_a_second_writer_fails_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputError, match=rf"in use by process {holder.pid} on {socket.gethostname()}"), \
                lock(tmp_path):
            pass
        result = cli("fit", "--config", str(TINY), "--set", f"output_dir={tmp_path}")
        one_line_error(result, f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    with lock(tmp_path) as d:  # the holder is dead: its lock is stale
        mine = json.loads((d / LOCK_NAME).read_text())
        assert mine == {"pid": os.getpid(), "host": socket.gethostname()}
        with lock(tmp_path):  # re-entrant within one process (demo -> fit)
            pass
        assert (d / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()


def test_two_fits_at_once_cannot_share_an_output_dir(tmp_path):
    from restlit.training.run import fit

    (tmp_path / "run").mkdir()  # held by a fit on another host (whose liveness cannot be checked from here)
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputError, match="in use by process 1 on elsewhere"):
        fit(tiny(tmp_path))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]


# ---------------------------------------------------------------- failed writes


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch):
    from restlit.training.run import fit

    real_save = torch.save
    run = tmp_path / "run"

    def save(obj, f, *args, **kwargs):
        if (run / "checkpoints" / "last.ckpt").is_file() and not isinstance(f, (str, os.PathLike)):  # the temporary file
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                               "data/3: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputError) as info:
        fit(tiny(tmp_path, "trainer.max_steps=3", "trainer.checkpoint_every=1"))
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message and "cannot write checkpoint" in message and str(run / "checkpoints") in message
    monkeypatch.undo()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1
    assert not list(run.rglob("*.tmp"))


def test_a_failed_export_names_the_path_and_leaves_no_temporary_directory(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    from restlit.training.run import fit

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    with pytest.raises(OutputError, match=r"final: cannot write: No space left on device"):
        fit(tiny(tmp_path, "trainer.max_steps=1"))
    run = tmp_path / "run"
    assert not (run / "final").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == [".restlit-outputs.json"]  # no temporary


def test_an_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    one_line_error(cli_fit(blocker / "run", tmp_path), f"{blocker / 'run'}: cannot write here")


# ---------------------------------------------------------------- config ranges, models


@pytest.mark.parametrize("override, message", [
    ("optim.lr=0", "optim.lr: must be > 0, got 0.0"),
    ("optim.lr=-1e-6", "optim.lr: must be > 0"),
    ("rollout.n=0", "rollout.n: must be >= 1, got 0"),
    ("rollout.n=1", "rollout.n: must be >= 2: GRPO"),
    ("trainer.prompts_per_step=0", "trainer.prompts_per_step: must be >= 1"),
    ("sft.batch_size=0", "sft.batch_size: must be >= 1"),
    ("rollout.temperature=-0.5", "rollout.temperature: must be >= 0 (0 samples greedily)"),
    ("rollout.top_p=0", "rollout.top_p: must be in (0, 1]"),
    ("rollout.top_p=1.5", "rollout.top_p: must be in (0, 1]"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens: must be >= 1"),
    ("trainer.max_steps=-1", "trainer.max_steps: must be >= 1, got -1"),
    ("trainer.max_steps=0", "trainer.max_steps: must be >= 1, got 0"),
    ("trainer.num_nodes=0", "trainer.num_nodes: must be >= 1"),
])
def test_config_values_out_of_range_name_the_key_and_range(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert message in str(info.value)
    load_config(TINY, ["rollout.temperature=0", "rollout.top_p=1", "trainer.num_nodes=2"])  # edges allowed


def test_an_empty_config_fails_before_any_model_loads(tmp_path, monkeypatch):
    import restlit.training.run

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    monkeypatch.setattr(restlit.training.run, "build_tokenizer_and_policy", lambda *a: pytest.fail("loaded a model"))
    one_line_error(cli("fit", "--config", str(empty)), f"{empty}: the config is empty")


def test_a_directory_that_is_not_a_model_is_one_line(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model")
    one_line_error(cli("tag", "x", "--tokenizer", str(notes)), f"{notes} is a directory but not a Hugging Face tokenizer")
    one_line_error(cli("eval", "--suite", "bfcl:simple_python", "--limit", "1", "--model", str(notes),
                       "-o", str(tmp_path / "eval")), f"{notes} is a directory but not a Hugging Face")
    one_line_error(cli_fit(tmp_path / "run", tmp_path, "--set", f"model.path={notes}", "--set", "model.init=pretrained",
                           "--set", "model.tokenizer=smollm2-135m"), f"{notes} is a directory but not a Hugging Face model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    one_line_error(cli("eval", "--suite", "bfcl:simple_python", "--limit", "1", "--model", str(broken),
                       "-o", str(tmp_path / "eval2")), f"{broken}")


# ---------------------------------------------------------------- one error base class


def test_every_user_facing_error_derives_from_one_base():
    from restlit.config import ConfigError
    from restlit.data_prep.inputs import InputError
    from restlit.evaluation.run import EvalError
    from restlit.models import ModelNotFound
    from restlit.report import ReportError
    from restlit.training.data import DataError

    for cls in (ConfigError, InputError, DataError, EvalError, ModelNotFound, ReportError, OutputError):
        assert issubclass(cls, UserError), cls
    demo = (REPO / "cli" / "demo.py").read_text()
    assert "import _" not in demo and ", _" not in demo  # no private helpers of cli/fit.py


# ---------------------------------------------------------------- quiet by default


@pytest.mark.slow
def test_a_first_run_shows_no_known_harmless_warnings_and_verbose_shows_them(tmp_path):
    def run(name: str, **env: str) -> str:
        cmd = [sys.executable, "-m", "restlit.cli.main", "fit", "--config", str(TINY), "--set", f"output_dir={tmp_path / name}",
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "trainer.max_steps=1",
               "--set", "trainer.checkpoint_every=1"]
        res = subprocess.run(cmd, cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stderr

    quiet = run("quiet")
    for noise in ("litlogger", "will be deleted", "LeafSpec", "manual optimization", "in eval mode"):
        assert noise not in quiet, quiet
    loud = run("loud", RESTLIT_VERBOSE="1")
    assert "litlogger" in loud and "manual optimization" in loud
    assert "will be deleted" not in loud  # restlit's CSV logger never deletes, so nothing to warn about


def test_make_demo_starts_with_the_demo():
    recipe = (REPO / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    commands = [line.strip() for line in recipe.splitlines()[1:] if line.startswith("\t")]
    assert commands and "restlit demo" in commands[0] and "restlit tag" not in recipe


# ---------------------------------------------------------------- wandb and mlflow


@pytest.mark.slow
def test_wandb_offline_and_mlflow_file_store_log_the_run(tmp_path, monkeypatch):
    from restlit.training.run import fit

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = fit(tiny(tmp_path, "trainer.max_steps=2", "logging.wandb.enabled=true", "logging.wandb.project=restlit-test",
                   "logging.wandb.tags=[tiny]", "logging.mlflow.enabled=true"))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    metric_files = list((run / "mlruns").rglob("metrics/reward.total"))
    assert len(metric_files) == 1
    assert len(metric_files[0].read_text().splitlines()) == 2  # one line per step


def test_a_missing_logger_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from restlit.training.loggers import build_loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    with pytest.raises(UserError, match=r"logging.wandb: needs the wandb package: pip install 'restlit\[wandb\]'"):
        build_loggers(tiny(tmp_path, "logging.wandb.enabled=true"), tmp_path)
    with pytest.raises(UserError, match=r"logging.mlflow: needs the mlflow package"):
        build_loggers(tiny(tmp_path, "logging.mlflow.enabled=true"), tmp_path)


@pytest.mark.slow
def test_vllm_with_an_unsupported_head_size_is_one_line(tmp_path):
    """The tiny config's head size is 16; vLLM's CPU attention has no kernel for it."""
    one_line_error(cli_fit(tmp_path / "run", tmp_path, "--set", "rollout.engine=vllm", "--set", "trainer.max_steps=1"),
                   "rollout.engine: vllm", "this model's is 16")


def test_demo_into_an_earlier_demo_refuses_before_any_stage(tmp_path, monkeypatch):
    import restlit.experiments.demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")
    monkeypatch.setattr(restlit.experiments.demo, "_run_demo", lambda *a, **k: pytest.fail("a stage ran"))
    config = tiny(tmp_path, name="demo")
    with pytest.raises(OutputError, match=f"{out} already holds a run; use another output_dir or --overwrite"):
        restlit.experiments.demo.run_demo(config)
    assert (out / "demo.json").read_text() == "{}"
    monkeypatch.setattr(restlit.experiments.demo, "_run_demo", lambda *a, **k: sorted(p.name for p in out.iterdir()))
    assert restlit.experiments.demo.run_demo(config, overwrite=True) == [LOCK_NAME]  # the earlier demo's files are gone


def test_resume_and_overwrite_together_is_one_line(tmp_path):
    one_line_error(cli_fit(tmp_path / "run", tmp_path, "--resume", "--overwrite"), "not both")
    assert not (tmp_path / "run").exists()
