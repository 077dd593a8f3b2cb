"""Saved predictions for ``restlit eval --predictions``: one JSON-lines file of single-turn outputs
and multi-turn step outputs, read and checked line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restlit.evaluation.suites import EvalError

__all__ = ["load_predictions"]


def _steps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in value)


def load_predictions(path: str | Path) -> dict[str, Any]:
    """Saved outputs: a JSON-lines file of ``{"id": str, "output": str}`` (single-turn items) or
    ``{"id": str, "turns": [[step text, ...], ...]}`` (multi-turn entries: the raw outputs of each
    turn's steps); the last line wins for a repeated id. EvalError naming the file and line for
    anything else."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read: {exc}") from None
    out: dict[str, Any] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str)):
            raise EvalError(f"{path}:{n}: expected an object with string fields 'id' and 'output'")
        if "turns" in row:
            if not _steps(row["turns"]):
                raise EvalError(f"{path}:{n}: 'turns' must be a list of lists of strings (each turn's step outputs)")
            out[row["id"]] = {"turns": row["turns"], "stop": None}
        elif isinstance(row.get("output"), str):
            out[row["id"]] = row["output"]
        else:
            raise EvalError(f"{path}:{n}: expected an object with string fields 'id' and 'output'")
    return out
