"""``restlit.optim``: the LR schedules by hand, parameter groups, and the configured pair."""

from __future__ import annotations

import math

import pytest
import torch

from restlit.config import OptimConfig
from restlit.training.optim import build_optimizer, configure, lr_factor


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0]),
    ("cosine", [0.5, 1.0, 1.0, 0.75, 0.25, 0.0]),
])
def test_schedules_hand_computed(schedule, expected):
    """2 warm-up steps, 5 steps in all: the factor reaches its end after the last step."""
    cfg = OptimConfig(warmup_steps=2, schedule=schedule)
    got = [lr_factor(k, cfg, total_steps=5) for k in range(6)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert lr_factor(3, cfg, 5) == pytest.approx({"constant": 1.0, "linear": 2 / 3,
                                                  "cosine": 0.5 * (1 + math.cos(math.pi / 3))}[schedule])


def test_no_weight_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.add_module("final_norm", torch.nn.Linear(4, 4, bias=False))
    model[0].bias.requires_grad_(False)
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.3), lr=0.2)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert {id(p) for p in no_decay["params"]} == {id(model[1].weight), id(model[1].bias), id(model.final_norm.weight)}
    assert all(g["lr"] == 0.2 for g in opt.param_groups)  # lr overrides the config's


def test_configure_steps_the_lr_to_zero_or_keeps_it():
    model = torch.nn.Linear(2, 2)
    for schedule, last in ((True, 0.0), (False, 1e-2)):
        out = configure(model, OptimConfig(lr=1e-2, schedule="linear"), total_steps=4, schedule=schedule)
        optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
        assert out["lr_scheduler"]["interval"] == "step"
        lrs = []
        for _ in range(4):
            optimizer.step()
            scheduler.step()
            lrs.append(scheduler.get_last_lr()[0])
        assert lrs[-1] == pytest.approx(last, abs=1e-15)
