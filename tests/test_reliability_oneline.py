"""Broken inputs and full disks end in one line, never a traceback (issue 33): a corrupt prepared
dataset in ``fit`` and ``eval -s heldout``, a full disk in ``eval``, the ``final/`` export and the
lock file, a config with a non-UTF-8 byte, ``prepare -o .``, a non-numeric step in ``metrics.csv``
on ``--resume``, a model whose vocabulary is smaller than its tokenizer, a truncated
``model.safetensors``; ``--export-chat`` is written atomically."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from restlit.errors import UserError
from tests.test_reliability import cli, one_line_error, tiny


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from restlit.data_prep.pipeline import prepare
    from tests.conftest import TOOLRL, data_file

    out = tmp_path_factory.mktemp("prep") / "data"
    prepare([data_file(TOOLRL)], out, val_fraction=0.3, workers=1)
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated_arrow": lambda d, split: _truncate(d / split / "data-00000-of-00001.arrow"),
    "no_dataset_dict": lambda d, split: (d / "dataset_dict.json").unlink(),
    "no_state": lambda d, split: (d / split / "state.json").unlink(),
    "no_split": lambda d, split: shutil.rmtree(d / split),
}


def _corrupt(prepared: Path, tmp_path: Path, how: str, split: str) -> Path:
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    CORRUPTIONS[how](data, split)
    return data


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_corrupt_prepared_dataset_in_fit_is_one_line(prepared: Path, tmp_path: Path, how: str) -> None:
    from restlit.training.run import fit

    data = _corrupt(prepared, tmp_path, how, "train")
    with pytest.raises(UserError) as info:
        fit(tiny(tmp_path, "data.raw=[]", f"data.prepared={data}"))
    assert "\n" not in str(info.value) and str(data) in str(info.value)


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_corrupt_prepared_dataset_in_heldout_eval_is_one_line(prepared: Path, tmp_path: Path, how: str) -> None:
    from tests.test_reliability_security import _eval

    data = _corrupt(prepared, tmp_path, how, "validation")
    one_line_error(_eval(data, tmp_path / "out"), str(data))


# ---------------------------------------------------------------- full disks


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_writing_eval_json_is_one_line(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    import os

    from tests.test_reliability_security import _eval

    monkeypatch.setattr(os, "replace", _enospc)  # the last step of the write, whichever way it is made
    out = tmp_path / "out"
    one_line_error(_eval(prepared, out), "No space left on device", "eval.json")
    assert not out.exists()  # no temporary file left, so the directory the failed eval made is gone too


def test_a_full_disk_taking_the_lock_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from restlit.runtime import outputs

    class Full:
        def __init__(self, fd, *args, **kwargs):
            self.fd = fd

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            outputs.os.close(self.fd)

        def write(self, text):
            _enospc()

    monkeypatch.setattr(outputs.os, "fdopen", Full)
    with pytest.raises(outputs.OutputError, match="No space left on device") as info, outputs.lock(tmp_path / "out"):
        pass
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / outputs.LOCK_NAME).exists()


def test_a_full_disk_in_the_final_export_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    from restlit.training.run import fit

    def full(self, *args, **kwargs):
        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    with pytest.raises(UserError, match="final: cannot write: No space left on device") as info:
        fit(tiny(tmp_path, "trainer.max_steps=1"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "final").exists()


def test_a_full_disk_during_a_checkpoint_says_so(tmp_path: Path, monkeypatch) -> None:
    """torch reports a failed write as ``PytorchStreamWriter failed writing file``: the one line
    says what the disk said."""
    import torch

    from restlit.runtime import outputs
    from restlit.training.checkpoints import AtomicCheckpointIO

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(outputs, "_free_bytes", lambda path: 0)
    with pytest.raises(outputs.OutputError, match="No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------- inputs


def test_a_config_with_a_non_utf8_byte_is_one_line(tmp_path: Path) -> None:
    from restlit.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_bytes(b"optim:\n  lr: 1.0e-3 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)
    one_line_error(cli("fit", "--config", str(path)), "not UTF-8")


@pytest.mark.parametrize("target", [".", ".."])
def test_prepare_into_the_current_directory_is_one_line(tmp_path: Path, monkeypatch, target: str) -> None:
    from tests.conftest import HAMMER, data_file

    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    res = cli("prepare", str(data_file(HAMMER)), "-o", target)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "current directory" in res.output, res.output
    assert list(tmp_path.rglob("*")) == [tmp_path / "a", here]


def test_a_non_numeric_step_in_metrics_csv_on_resume_is_one_line(tmp_path: Path) -> None:
    from restlit.runtime.outputs import OutputError
    from restlit.training.loggers import keep_rows_before

    (tmp_path / "metrics.csv").write_text("step,loss\n0,1.0\nabc,2.0\n2,3.0\n")
    with pytest.raises(OutputError, match="step 'abc'") as info:
        keep_rows_before(tmp_path, 1)
    assert "\n" not in str(info.value) and "metrics.csv" in str(info.value)
    assert (tmp_path / "metrics.csv").read_text() == "step,loss\n0,1.0\nabc,2.0\n2,3.0\n"


def test_a_full_disk_during_export_chat_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    """The chat file is moved out of the staging directory; across file systems it is copied,
    into a temporary file that takes its name only once complete."""
    import os

    from tests.conftest import HAMMER, data_file

    export = tmp_path / "elsewhere" / "chat.jsonl"
    export.parent.mkdir()
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == export:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst)

    def copyfile(src, dst, *args, **kwargs):
        Path(dst).write_text('{"id": "partial')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    res = cli("prepare", str(data_file(HAMMER)), "-o", str(tmp_path / "out"), "--export-chat", str(export))
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "No space left on device" in res.output, res.output
    assert list(export.parent.iterdir()) == []


# ---------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_parts) -> Path:
    """The tiny random policy and its tokenizer, saved as a model directory."""
    tokenizer, policy = tiny_parts
    out = tmp_path_factory.mktemp("model") / "tiny"
    policy.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_truncated_model_safetensors_is_one_line(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from restlit.models import load_policy

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _truncate(model / "model.safetensors")
    with pytest.raises(UserError, match="model.safetensors|cannot be loaded") as info:
        load_policy(str(model))
    assert "\n" not in str(info.value) and str(model) in str(info.value)
    one_line_error(cli("eval", "-s", "heldout", "--data", str(prepared), "--model", str(model), "-o",
                       str(tmp_path / "out")), str(model))


def test_a_model_whose_vocabulary_is_smaller_than_its_tokenizer_is_one_line(tmp_path: Path) -> None:
    from restlit.training.run import fit

    arch = "{model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, " \
           "num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 1000}"
    with pytest.raises(UserError, match="vocabulary") as info:
        fit(tiny(tmp_path, f"model.architecture={arch}", "trainer.max_steps=1"))
    assert "\n" not in str(info.value) and "1000" in str(info.value)


def test_a_tokenizer_with_extra_tokens_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from restlit.evaluation.generation import load_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.add_tokens([f"<extra_{i}>" for i in range(8)])
    tok.save_pretrained(model)
    with pytest.raises(UserError, match="vocabulary") as info:
        load_model(str(model))
    assert "\n" not in str(info.value)
