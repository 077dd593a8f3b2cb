"""The prepared sample: its on-disk row schema and the one place rows are decoded.

Arrow stores heterogeneous nested dicts badly (every tool schema differs), so tools, history,
target and spans are JSON strings beside flat columns. Training and evaluation read samples
through :meth:`Sample.from_row` / :func:`load_samples` and never parse those columns themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.prompts import build_messages

# Version of the row layout below; written into manifest.json.
SCHEMA_VERSION = 1

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("source", "string"),
    ("input_file", "string"),
    ("record_index", "int64"),
    ("turn_index", "int32"),
    ("split", "string"),
    ("tools_json", "string"),
    ("messages_json", "string"),
    ("target_json", "string"),
    ("target_text", "string"),
    ("spans_json", "string"),
    ("n_calls", "int32"),
    ("n_history", "int32"),
)


def arrow_schema() -> Any:
    """The pyarrow schema of a prepared split (column order as in ``COLUMNS``)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


@dataclass
class Sample:
    """One decoded sample.

    ``tools``: ``[{"name", "description", "parameters": JSON Schema}]``; ``history``: the
    messages before the target, ``[{"role": "user" | "assistant" | "tool", "content"}]``;
    ``target``: ``{"think", "calls": [{"name", "arguments"}], "response"}``; ``target_text``:
    the target in the canonical format; ``spans``: ``[(start, end, region name)]`` over
    ``target_text`` from ``restlit.regions.tag``.
    """

    id: str
    source: str
    input_file: str
    record_index: int
    turn_index: int
    split: str
    tools: list[dict[str, Any]]
    history: list[dict[str, str]]
    target: dict[str, Any]
    target_text: str
    spans: list[tuple[int, int, str]]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        """Decode one dataset row (a dict as ``datasets`` returns it)."""
        return cls(
            id=row["id"],
            source=row["source"],
            input_file=row["input_file"],
            record_index=row["record_index"],
            turn_index=row["turn_index"],
            split=row["split"],
            tools=json.loads(row["tools_json"]),
            history=json.loads(row["messages_json"]),
            target=json.loads(row["target_json"]),
            target_text=row["target_text"],
            spans=[tuple(s) for s in json.loads(row["spans_json"])],
        )

    def messages(self, *, with_target: bool = False) -> list[dict[str, str]]:
        """Chat messages for ``tokenizer.apply_chat_template`` (see ``restlit.prompts.build_messages``)."""
        return build_messages(self.tools, self.history, self.target if with_target else None)


def load_samples(directory: str | Path) -> Any:
    """Load a prepared dataset (``restlit prepare -o DIR``) as a ``datasets.DatasetDict``.

    Rows keep the JSON columns; decode one with :meth:`Sample.from_row`. A corrupt or incomplete
    directory raises ``datasets``' own errors; :func:`read_split` turns them into one line.
    """
    import datasets

    return datasets.load_from_disk(str(directory))


def read_split(directory: str | Path, split: str, limit: int | None = None) -> list[Sample] | None:
    """The samples of one split of a prepared dataset (the first ``limit``), decoded; None when the
    dataset has no such split. A ValueError (one line naming ``directory``) when the dataset cannot
    be read: a truncated arrow file, a missing ``dataset_dict.json`` or ``state.json``, a split
    listed but gone."""
    try:
        rows = load_samples(directory)
        if split not in rows:
            return None
        rows = rows[split]
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        return [Sample.from_row(row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSError
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{directory}: the prepared dataset cannot be read ({why}); prepare it again") from None
