"""The entropy curriculum: a Lightning Callback that owns the region entropy statistics and the
training progress ``nu`` that the ResT weights depend on.

Each step the module hands it the step's per-region entropy sums and counts
(:func:`restlit.objective.region_entropy_stats`); the callback

1. sums them across ranks through ``trainer.strategy.reduce`` (single device, DDP and FSDP alike:
   every rank then holds the same global statistics, as if the whole batch were on one process);
2. keeps running means per region (an exponential moving average with decay ``ema``, or each
   step's own statistics when ``ema == 0``), which the weights use;
3. after the optimizer step, advances ``nu``:

   - ``by: step``: ``nu = min(1, step / total_steps)``;
   - ``by: none``: ``nu`` stays 0 (the priors are frozen at their start);
   - ``by: entropy``: ``nu`` grows by ``1 / total_steps`` only on steps where the structured
     regions' entropy has stabilised, i.e. the relative change of the running mean entropy over
     TOOL_NAME, PARAM_NAME, PARAM_VALUE and FORMAT tokens is below ``tolerance``. Training that is
     still reshaping the structure holds the curriculum back.

Its state (``nu``, the running statistics, the last structured entropy, the step count) is saved
in and restored from Lightning checkpoints, so a resumed run continues the same curriculum; at
the end of training every rank also writes its own copy to ``RUN/curriculum/rank<r>.pt``, which
shows that the ranks agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from restlit.config import CurriculumConfig
from restlit.objective import NUM_REGIONS, region_mean_entropy
from restlit.regions import Region

STRUCTURED = (Region.TOOL_NAME, Region.PARAM_NAME, Region.PARAM_VALUE, Region.FORMAT)


class EntropyCurriculum(L.Callback):
    """See the module docstring. ``max_steps`` is the run's length, used when
    ``config.total_steps`` is 0."""

    def __init__(self, config: CurriculumConfig, max_steps: int):
        self.config = config
        self.total_steps = config.total_steps or max(1, max_steps)
        self.progress = 0.0
        self.steps = 0
        self.running = torch.zeros(2, NUM_REGIONS, dtype=torch.float64)  # sums and counts
        self.last_structured: float | None = None
        self._step_stats: torch.Tensor | None = None

    # -- called by the module in the middle of its training step ---------------------------

    def reduce(self, trainer: L.Trainer, stats: torch.Tensor) -> torch.Tensor:
        """Sum this rank's ``[2, R]`` statistics over all ranks and fold them into the running
        statistics; returns the running statistics the weights should use (same on every rank)."""
        total = trainer.strategy.reduce(stats.to(trainer.strategy.root_device), reduce_op="sum")
        total = total.detach().to("cpu", torch.float64)
        self._step_stats = total
        if self.config.ema > 0 and self.running[1].sum() > 0:
            self.running = self.config.ema * self.running + (1 - self.config.ema) * total
        else:
            self.running = total.clone()
        return self.running.clone()

    # -- Lightning hooks -----------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._step_stats is None:  # a skipped (degenerate) step: the curriculum stands still
            return
        self.steps += 1
        structured = self._structured_entropy(self.running)
        if self.config.by == "step":
            self.progress = min(1.0, self.steps / self.total_steps)
        elif self.config.by == "entropy":
            stable = (
                self.last_structured is not None
                and abs(structured - self.last_structured) <= self.config.tolerance * max(abs(self.last_structured), 1e-8)
            )
            if stable:
                self.progress = min(1.0, self.progress + 1.0 / self.total_steps)
        self.last_structured = structured
        means = region_mean_entropy(self.running)
        metrics = {"curriculum/progress": self.progress, "curriculum/structured_entropy": structured}
        for region in Region:
            metrics[f"entropy/{region.name}"] = float(means[region])
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False)
        self._step_stats = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(trainer.default_root_dir) / "curriculum"
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), out / f"rank{trainer.global_rank}.pt")

    @staticmethod
    def _structured_entropy(stats: torch.Tensor) -> float:
        idx = torch.tensor([int(r) for r in STRUCTURED])
        count = stats[1, idx].sum()
        return float(stats[0, idx].sum() / count) if count > 0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "steps": self.steps, "running": self.running.clone(),
                "last_structured": self.last_structured}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress = float(state["progress"])
        self.steps = int(state["steps"])
        self.running = state["running"].to(torch.float64)
        self.last_structured = state["last_structured"]
