"""The entropy curriculum: a Lightning Callback that owns the running region entropy statistics
and the training progress ``nu`` that the ResT weights depend on.

Progress, one definition used and logged alike. Training step ``s = 0 .. T-1`` (Lightning's
global step, which counts rollouts; ``T = total_steps``, or the trainer's ``max_steps``) uses
the ``nu`` that :meth:`EntropyCurriculum.progress_at` gives for ``s`` (logged as
``curriculum/progress``, the priors the weights use as ``curriculum/prior/<REGION>``):

- ``by: step``: ``nu = min(1, s / (T - 1))`` (1 when ``T = 1``): 0 at the first step, 1 at the last;
- ``by: entropy``: ``nu`` grows by ``1 / (T - 1)`` (up to 1) on each step where the structured
  regions' entropy has stabilised, i.e. the relative change of the running mean entropy over
  TOOL_NAME, PARAM_NAME, PARAM_VALUE and FORMAT tokens, from the previous observed step to this
  one, is at most ``tolerance``; training that is still reshaping the structure holds it back;
- ``by: none``: ``nu = 0`` at every step (the priors frozen at their start; an ablation arm).

Each step that trains, the module hands :meth:`EntropyCurriculum.observe` the step's per-region
entropy sums and counts, already summed over ranks (:func:`restlit.training.distributed.reduce_sum`), so
every rank holds the same state. The callback keeps running statistics (an exponential moving
average with decay ``ema``, or each step's own when ``ema == 0``), which the weights use.

A skipped step (no group with an advantage, no completion token) trains nothing and is not
observed: it folds no entropies into the running statistics and advances no ``by: entropy``
progress; ``by: step`` progress is a function of the step counter, so it moves on regardless.

Its state (``nu``, the running statistics, the last structured entropy, the number of observed
steps) is saved in and restored from Lightning checkpoints, so a resumed run continues the same
curriculum; at the end of training every rank also writes its own copy to
``RUN/curriculum/rank<r>.pt``, which shows that the ranks agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from restlit.config import CurriculumConfig
from restlit.objective import (
    NUM_REGIONS,
    WeightConfig,
    region_mean_entropy,
    region_priors,
    static_region_weights,
)
from restlit.regions import Region

STRUCTURED = (Region.TOOL_NAME, Region.PARAM_NAME, Region.PARAM_VALUE, Region.FORMAT)


class EntropyCurriculum(L.Callback):
    """See the module docstring. ``max_steps`` is the run's length, used when
    ``config.total_steps`` is 0."""

    def __init__(self, config: CurriculumConfig, max_steps: int):
        self.config = config
        self.total_steps = config.total_steps or max(1, max_steps)
        self.progress = 0.0  # by: entropy, the progress accumulated so far
        self.steps = 0  # observed (trained) steps
        self.running = torch.zeros(2, NUM_REGIONS, dtype=torch.float64)  # sums and counts
        self.last_structured: float | None = None

    @property
    def increment(self) -> float:
        """The progress one step adds: ``1 / (T - 1)`` (1 when ``T = 1``)."""
        return 1.0 / max(1, self.total_steps - 1)

    def observe(self, stats: torch.Tensor) -> torch.Tensor:
        """Fold one trained step's global ``[2, R]`` statistics into the running statistics (and,
        ``by: entropy``, advance the progress when the structured entropy is stable); returns the
        running statistics the weights use."""
        total = stats.detach().to("cpu", torch.float64)
        if self.config.ema > 0 and self.running[1].sum() > 0:
            self.running = self.config.ema * self.running + (1 - self.config.ema) * total
        else:
            self.running = total.clone()
        self.steps += 1
        structured = structured_entropy(self.running)
        if self.config.by == "entropy" and self.last_structured is not None:
            change = abs(structured - self.last_structured)
            if change <= self.config.tolerance * max(abs(self.last_structured), 1e-8):
                self.progress = min(1.0, self.progress + self.increment)
        self.last_structured = structured
        return self.running.clone()

    def progress_at(self, step: int) -> float:
        """``nu`` of 0-based training step ``step`` (after :meth:`observe`, when the step trains)."""
        if self.config.by == "step":
            return min(1.0, step * self.increment) if self.total_steps > 1 else 1.0
        if self.config.by == "entropy":
            return self.progress
        return 0.0

    def metrics(self, step: int, weights: WeightConfig) -> dict[str, float]:
        """What step ``step`` logs: ``curriculum/progress`` (the ``nu`` it used), the structured entropy,
        the running ``entropy/<REGION>`` and ``curriculum/prior/<REGION>``, the prior the weights gave
        each region: :func:`region_priors` at ``nu`` (``entropy`` mode), the released code's constants
        at reward step ``step + 1`` (``static``); none for ``uniform`` weights."""
        nu = self.progress_at(step)
        out = {"curriculum/progress": nu, "curriculum/structured_entropy": structured_entropy(self.running)}
        means = region_mean_entropy(self.running)
        priors = None
        if weights.mode == "entropy":
            priors = region_priors(nu, weights)
        elif weights.mode == "static":
            priors = static_region_weights(step + 1)
        for region in Region:
            out[f"entropy/{region.name}"] = float(means[region])
            if priors is not None:
                out[f"curriculum/prior/{region.name}"] = float(priors[region])
        return out

    # -- Lightning hooks -----------------------------------------------------------------

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(trainer.default_root_dir) / "curriculum"
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), out / f"rank{trainer.global_rank}.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "steps": self.steps, "running": self.running.clone(),
                "last_structured": self.last_structured}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress = float(state["progress"])
        self.steps = int(state["steps"])
        self.running = state["running"].to(torch.float64)
        self.last_structured = state["last_structured"]


def structured_entropy(stats: torch.Tensor) -> float:
    """Mean entropy over the STRUCTURED regions' tokens of ``[2, R]`` statistics (0 without tokens)."""
    idx = torch.tensor([int(r) for r in STRUCTURED])
    count = stats[1, idx].sum()
    return float(stats[0, idx].sum() / count) if count > 0 else 0.0
