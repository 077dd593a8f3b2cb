"""Reading a run directory: ``metrics.csv`` (merged by step), ``config.yaml``, the prepared
dataset's ``manifest.json``, ``eval.json`` files, and what the figures and the Markdown both
derive from them (the logged curriculum priors, regions without tokens, the run kind).

Steps are 1-based (metrics.csv's ``step`` column + 1, the numbering the checkpoints and the
reward schedule use).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.errors import UserError
from restlit.regions import Region

REGIONS: tuple[str, ...] = tuple(r.name for r in Region)
# The parts of a step's wall time, as logged in time/<part>.
TIME_PARTS: tuple[str, ...] = ("rollout", "scoring", "update")
# The column training logs each step's curriculum prior of a region under.
PRIOR_PREFIX = "curriculum/prior/"
DEFAULT_LAST_N = 10


class ReportError(UserError):
    """A run directory that cannot be reported on (missing or unreadable logs); one line."""


@dataclass
class RunLog:
    """The rows of one ``metrics.csv``, merged by step: ``rows[step]`` maps a column to its value
    (1-based steps; a column absent from a step, e.g. ``train/*`` on a skipped step, is absent
    from its dict). Non-finite values are kept out, so a present value is always plottable."""

    path: Path
    rows: dict[int, dict[str, float]]

    @property
    def steps(self) -> list[int]:
        return sorted(self.rows)

    @property
    def columns(self) -> set[str]:
        return {k for row in self.rows.values() for k in row}

    def has(self, key: str) -> bool:
        return any(key in row for row in self.rows.values())

    def series(self, key: str, steps: Iterable[int] | None = None) -> tuple[list[int], list[float]]:
        """The steps that logged ``key`` and the values, in step order."""
        xs, ys = [], []
        for s in self.steps if steps is None else steps:
            row = self.rows.get(s)
            if row is not None and key in row:
                xs.append(s)
                ys.append(row[key])
        return xs, ys

    def skipped_steps(self) -> list[int]:
        return [s for s in self.steps if self.rows[s].get("skipped", 0.0) > 0]

    def skip_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            for k, v in row.items():
                if k.startswith("skipped/") and v > 0:
                    reason = k.split("/", 1)[1]
                    out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))


def read_metrics(path: str | Path) -> RunLog:
    """Read a Lightning CSVLogger ``metrics.csv``; rows sharing a ``step`` are merged (Lightning
    writes validation and training keys of one step on separate rows). ReportError when the file
    is missing, has no ``step`` column or no rows."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    rows: dict[int, dict[str, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "step" not in reader.fieldnames:
                raise ReportError(f"{path}: not a metrics log (no 'step' column)")
            for raw in reader:
                try:
                    step = int(float(raw.get("step") or "")) + 1
                except ValueError:
                    continue  # a repeated header or a torn last line
                row = rows.setdefault(step, {})
                for key, text in raw.items():
                    if key in (None, "step", "epoch") or text in (None, ""):
                        continue
                    try:
                        value = float(text)
                    except (TypeError, ValueError):
                        continue
                    if math.isfinite(value):
                        row[key] = value
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise ReportError(f"{path}: no logged steps yet")
    return RunLog(path, rows)


def load_run_config(run_dir: Path) -> tuple[Any | None, dict[str, Any] | None, str | None]:
    """``(RunConfig or None, raw dict or None, text or None)`` from ``run_dir/config.yaml``. The
    typed config may be None for a config an older or newer restlit wrote; the raw dict is then
    still used where it can be."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None, None, None
    text = path.read_text(encoding="utf-8")
    try:
        import yaml

        raw = yaml.safe_load(text)
        raw = raw if isinstance(raw, dict) else None
    except Exception:  # noqa: BLE001 - a broken file is reported, not fatal
        raw = None
    try:
        from restlit.config import load_config

        cfg = load_config(path)
    except Exception:  # noqa: BLE001
        cfg = None
    return cfg, raw, text


def config_value(raw: dict[str, Any] | None, dotted: str, default: Any = None) -> Any:
    """``raw['a']['b']`` for ``dotted`` ``a.b``, or ``default`` where a level is missing."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def find_manifest(cfg: Any, raw: dict[str, Any] | None) -> tuple[Path | None, str]:
    """The prepared dataset's ``manifest.json`` for the run's data config and how it was found
    (or, when it was not, where it was looked for)."""
    data = getattr(cfg, "data", None)
    prepared = getattr(data, "prepared", None) if data is not None else config_value(raw, "data.prepared")
    if prepared:
        path = Path(prepared) / "manifest.json"
        return (path, "data.prepared") if path.is_file() else (None, f"not found at {path} (data.prepared)")
    raw_files = list(getattr(data, "raw", None) or config_value(raw, "data.raw", []) or [])
    cache_dir = getattr(data, "cache_dir", None) if data is not None else config_value(raw, "data.cache_dir")
    if not raw_files or not cache_dir:
        return None, "the run's config names no data.prepared nor data.raw"
    if data is not None:
        from restlit.training.data import prepared_dir

        # a relative data.raw path fails from another working directory: then match below
        with contextlib.suppress(Exception):
            path = prepared_dir(data) / "manifest.json"
            if path.is_file():
                return path, "data.raw, prepared into data.cache_dir"
    # The raw files may be elsewhere now (relative paths, another cwd): match the cache entries'
    # manifests on the inputs and options instead of on the files' hash.
    options = {
        k: getattr(data, k, None) if data is not None else config_value(raw, f"data.{k}")
        for k in ("format", "on_invalid", "val_fraction", "seed")
    }
    matches = []
    for candidate in sorted(Path(cache_dir).glob("prepared-*/manifest.json")):
        try:
            m = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if [i.get("path") for i in m.get("inputs", [])] != [str(p) for p in raw_files]:
            continue
        if any(v is not None and m.get("options", {}).get(k) != v for k, v in options.items()):
            continue
        matches.append(candidate)
    if matches:
        newest = max(matches, key=lambda p: p.stat().st_mtime)
        return newest, "data.raw, matched by inputs and options in data.cache_dir"
    return None, f"no prepared dataset for data.raw found in {cache_dir}"


def find_evals(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable ``eval.json`` under ``run_dir`` (``restlit eval -o RUN/eval/...``)."""
    out = []
    for path in sorted(run_dir.rglob("eval.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("summary"), dict):
            out.append((path, payload))
    return out


# ------------------------------------------------------------------------------------------------
# What the figures and report.md both derive from the log
# ------------------------------------------------------------------------------------------------


def regions_without_tokens(log: RunLog) -> set[str]:
    """Regions that had no completion tokens in any logged step (``tokens/<REGION>`` all 0; without
    that column, ``entropy/<REGION>`` all 0, which the curriculum logs for an empty region)."""
    if any(log.has(f"tokens/{r}") for r in REGIONS):
        return {r for r in REGIONS if all(v <= 0 for v in log.series(f"tokens/{r}")[1])}
    if any(log.has(f"entropy/{r}") for r in REGIONS):
        return {r for r in REGIONS if all(v == 0 for v in log.series(f"entropy/{r}")[1])}
    return set()


def is_sft_log(log: RunLog) -> bool:
    """An SFT run's log (``sft/loss``, no rewards)."""
    return log.has("sft/loss") and not log.has("reward/total")



def curriculum_priors(
    log: RunLog, cfg: Any, raw: dict[str, Any] | None
) -> tuple[str, list[int], dict[str, list[float]]]:
    """``(mode, steps, prior per region)``: the prior training gave each region at each step, as
    it logged them (``curriculum/prior/<REGION>``: the ``entropy`` mode's schedule at the step's
    progress, or the released code's per-step constants in ``static`` mode). ``mode`` is
    ``objective.weights.mode`` from the run's config (``unknown`` without one); ``uniform`` has no
    priors. A run from before training logged them gives no steps: the priors are not
    recomputed, since only training knows the values it used."""
    weights = getattr(getattr(cfg, "objective", None), "weights", None)
    mode = getattr(weights, "mode", None) or config_value(raw, "objective.weights.mode") or "unknown"
    steps: list[int] = []
    values: dict[str, list[float]] = {r: [] for r in REGIONS}
    if mode == "uniform":
        return mode, steps, values
    keys = [PRIOR_PREFIX + r for r in REGIONS]
    for s in log.steps:
        row = log.rows[s]
        if all(k in row for k in keys):
            steps.append(s)
            for r, k in zip(REGIONS, keys):
                values[r].append(row[k])
    return mode, steps, values


def duration(seconds: float) -> str:
    """``12.3 s``, ``4.5 min`` or ``1.2 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
