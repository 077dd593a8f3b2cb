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
