"""The run's loggers: CSV (``metrics.csv``), TensorBoard, Weights & Biases and MLflow.

``metrics.csv`` is never deleted by a new logger (Lightning's CSV logger removes it whenever its
directory is not empty, ``--resume`` included). It is flushed after every logged step, so the rows
of every step a checkpoint holds are on disk before the next one; a resumed run first drops the
rows of steps at or after its checkpoint (:func:`keep_rows_before`: the resumed run logs those
steps again, exactly as they are recomputed) and appends after them.

Weights & Biases (``logging.wandb``, extra ``restlit[wandb]``) runs offline by default (no network;
``wandb sync RUN/wandb/offline-run-*`` uploads later). MLflow (``logging.mlflow``, extra
``restlit[mlflow]``) writes a local file store in ``RUN/mlruns`` unless a ``tracking_uri`` is set;
its metric names have ``.`` for ``/`` (``reward.total``).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from restlit.config import LoggingConfig, RunConfig
from restlit.errors import UserError
from restlit.runtime.outputs import OutputError, atomic_write

METRICS = "metrics.csv"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer without the deletion: an existing ``metrics.csv`` keeps its rows and
    its header (new keys still rewrite the header, as Lightning does)."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:  # Lightning's version deletes metrics.csv
        pass


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``RUN/metrics.csv`` with :class:`_AppendingWriter`, flushed every step."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, name="", version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def keep_rows_before(run_dir: Path, step: int) -> list[int]:
    """Drop ``metrics.csv``'s rows of steps ``>= step`` (written after the checkpoint a run resumes
    from); returns the steps below ``step`` that have no row (a run killed between a checkpoint and
    that step's row), so the caller can say so. The file is rewritten atomically."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return list(range(step))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    for i, r in enumerate(rows, start=2):
        try:
            float(r.get("step") or 0)
        except ValueError:
            raise OutputError(f"{path}: line {i} has step {r['step']!r}, not a number; fix or delete that line "
                              f"to resume") from None
    kept = [r for r in rows if r.get("step", "") != "" and int(float(r["step"])) < step]
    if len(kept) != len(rows):
        with atomic_write(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
    seen = {int(float(r["step"])) for r in kept}
    return [s for s in range(step) if s not in seen]


def _mlflow_logger() -> type:
    """Lightning's MLFlowLogger with ``/`` in metric names written as ``.``: the file store keeps a
    metric per file, so ``skipped`` and ``skipped/no_advantage`` could not both exist."""
    from lightning.pytorch.loggers import MLFlowLogger

    class DottedMLFlowLogger(MLFlowLogger):
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            super().log_metrics({k.replace("/", "."): v for k, v in metrics.items()}, step)

    return DottedMLFlowLogger


def _require(module: str, key: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{key}: needs the {module} package: pip install 'restlit[{extra}]'")


def build_loggers(config: RunConfig, run_dir: Path) -> list[Any]:
    """The loggers ``config.logging`` enables, all writing under ``run_dir``."""
    log: LoggingConfig = config.logging
    loggers: list[Any] = []
    if log.csv:
        loggers.append(AppendingCSVLogger(run_dir))
    if log.tensorboard and any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    if log.wandb.enabled:
        _require("wandb", "logging.wandb", "wandb")
        from lightning.pytorch.loggers import WandbLogger

        w = log.wandb
        loggers.append(WandbLogger(project=w.project, name=w.name, tags=list(w.tags) or None, save_dir=str(run_dir),
                                   offline=w.mode == "offline", mode=w.mode))
    if log.mlflow.enabled:
        _require("mlflow", "logging.mlflow", "mlflow")
        m = log.mlflow
        uri = m.tracking_uri
        if not uri:  # MLflow 3 asks for an opt-in to its file store; restlit's default is that local store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(run_dir) / "mlruns").resolve().as_uri()
        loggers.append(_mlflow_logger()(experiment_name=m.experiment, run_name=m.run_name, tracking_uri=uri))
    return loggers


__all__ = ["METRICS", "AppendingCSVLogger", "build_loggers", "keep_rows_before"]
