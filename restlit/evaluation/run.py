"""``restlit eval`` as a library: suites, outputs (saved predictions or greedy generation),
per-item verdicts, summaries and ``eval.json``.

The jobs live in their own modules and are re-exported here, the entry point callers use:

* :mod:`restlit.evaluation.suites` - suite names, :func:`parse_suites`, :func:`load_suite`;
* :mod:`restlit.evaluation.predictions` - saved outputs, :func:`load_predictions`;
* :mod:`restlit.evaluation.generation` - model loading, engines, :func:`generate_outputs`,
  :func:`rollout_outputs`;
* :mod:`restlit.evaluation.scoring` - :func:`score` and BFCL's leaderboard :func:`groups`;

and :func:`write_report` writes ``eval.json``. A single-turn item's output is one text; a
multi-turn entry's is ``{"turns": [[step text, ...], ...], "stop": None | reason}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restlit.evaluation.generation import (
    ENGINES,
    check_engine,
    eval_engine,
    generate_outputs,
    load_model,
    multi_turn_generator,
    rollout_outputs,
)
from restlit.evaluation.predictions import load_predictions
from restlit.evaluation.scoring import GROUPS, groups, score
from restlit.evaluation.suites import (
    BFCL_ALL,
    HELDOUT,
    MULTI_TURN,
    EvalError,
    Suite,
    load_suite,
    parse_suites,
)
from restlit.runtime.outputs import atomic_write_text
from restlit.runtime.owned import record

__all__ = [
    "BFCL_ALL",
    "ENGINES",
    "GROUPS",
    "HELDOUT",
    "MULTI_TURN",
    "EvalError",
    "Suite",
    "check_engine",
    "eval_engine",
    "generate_outputs",
    "groups",
    "load_model",
    "load_predictions",
    "load_suite",
    "multi_turn_generator",
    "parse_suites",
    "rollout_outputs",
    "score",
    "write_report",
]


def write_report(result: dict[str, Any], out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write ``out_dir/eval.json`` (``config``, ``summary``, ``groups``, per-item ``items``) atomically
    (:func:`~restlit.runtime.outputs.atomic_write_text`: never through a symbolic link, a full disk
    is one line); return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    payload = {"config": config, "summary": result["summary"], "groups": result.get("groups", {}),
               "missing": result["missing"], "items": result["items"]}
    atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    record(out, [path.name])  # what an --overwrite of a directory holding it may remove
    return path
