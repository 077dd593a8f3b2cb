"""LoRA adapters (``model.lora``, :mod:`restlit.adapters`): config, reference, frozen base weights,
optimizer state, rollouts on the current adapters, outputs, resume and DDP."""

from __future__ import annotations

import pytest

from restlit.config import ConfigError, load_config
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"


def test_lora_is_off_by_default_and_set_turns_it_on():
    assert load_config(TINY).model.lora is None
    lora = load_config(TINY, ["model.lora.r=16"]).model.lora
    assert (lora.r, lora.alpha, lora.target_modules, lora.modules_to_save) == (16, 32.0, ["all-linear"], [])


@pytest.mark.parametrize(("override", "message"), [
    ("model.lora.r=0", "model.lora: r must be >= 1, got 0"),
    ("model.lora.dropout=1.5", "model.lora: dropout must be in [0, 1)"),
    ("model.lora.alpha=-1", "model.lora: alpha must be > 0"),
    ("model.lora.target_modules=[]", "model.lora: target_modules must be a non-empty list"),
    ("model.lora.target_modules=q_proj", "model.lora.target_modules: expected a list"),
    ("model.lora.rank=3", "model.lora.rank: unknown key; allowed: r, alpha"),
])
def test_bad_lora_values_fail_in_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
