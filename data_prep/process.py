"""Per-record processing: raw records of one input -> columnar rows per split, reject lines,
chat-export lines and counts.

A record is read by its layout's reader into a trace, decomposed into one sample per
assistant turn (some of them name-masked), and each turn's reference calls are validated
against the tool schemas (``on_invalid``: reject, keep or coerce) before the target is rendered
and tagged. :class:`Processor` holds only options, so the orchestration in
:mod:`restlit.data_prep.pipeline` can hand chunks of records to worker processes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restlit.data_prep.decompose import decompose
from restlit.data_prep.export import chat_record
from restlit.data_prep.inputs import RawRecord
from restlit.data_prep.manifest import Counts
from restlit.data_prep.masking import mask_trace
from restlit.data_prep.readers import READERS
from restlit.data_prep.records import RecordError, Target
from restlit.data_prep.samples import COLUMNS
from restlit.data_prep.schema import coerce_arguments
from restlit.prompts import render_target
from restlit.regions import tag
from restlit.toolcalls import validate_calls

SPLITS = ("train", "validation")

_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
# rejects keep the raw record, which may hold anything: what JSON cannot encode is written as str()
_ENCODE_REJECT = json.JSONEncoder(ensure_ascii=False, default=str).encode


def split_of(record_key: str, val_fraction: float, seed: int) -> str:
    """``"validation"`` for a stable pseudo-random ``val_fraction`` of record keys, else ``"train"``.

    Keyed on the record, not the turn, so all samples of one dialogue land in the same split
    (a later turn's history contains the earlier turns' targets).
    """
    return "validation" if _hash_below(f"{seed}\x00{record_key}", val_fraction) else "train"


def _hash_below(key: str, fraction: float) -> bool:
    """True for a stable pseudo-random ``fraction`` of keys."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


@dataclass
class Chunk:
    """What processing a run of records produced: columnar rows per split, reject lines, chat
    export lines, counts."""

    columns: dict[str, dict[str, list]]
    rejects: list[str]
    exports: list[str]
    counts: Counts


# a lone UTF-16 surrogate (a "\\ud800" escape in the JSON): Python keeps it, UTF-8 cannot store it
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate(*texts: str) -> RecordError | None:
    """A ``lone_surrogate`` error for the first of ``texts`` holding one, else None."""
    for text in texts:
        m = _SURROGATE.search(text)
        if m:
            return RecordError("lone_surrogate", f"the text holds a lone UTF-16 surrogate (\\u{ord(m.group()):04x}), "
                                                 "which UTF-8 cannot store")
    return None


_TOO_DEEP = RecordError("too_deep", "nested deeper than Python can walk")


@dataclass(frozen=True)
class Processor:
    """Turns raw records of one input into rows and rejects. Picklable, so chunks of records can
    be processed in worker processes; holds no open files."""

    reader_name: str
    display: str
    file_key: str
    on_invalid: str
    val_fraction: float
    seed: int
    mask_fraction: float = 0.0
    mask_seed: int = 0
    export: bool = False

    def __call__(self, records: list[RawRecord]) -> Chunk:
        """Process a run of records (in order) into one :class:`Chunk`."""
        chunk = Chunk({s: {name: [] for name, _ in COLUMNS} for s in SPLITS}, [], [], Counts())
        for raw in records:
            self._record(raw, chunk)
        return chunk

    def _reject(self, chunk: Chunk, raw: RawRecord, turn: int | None, err: RecordError) -> None:
        """Count ``err`` and add its ``rejects.jsonl`` line (with the raw record) to ``chunk``."""
        counts = chunk.counts
        counts.rejected[err.reason] = counts.rejected.get(err.reason, 0) + 1
        for role in err.roles:
            counts.unknown_roles[role] = counts.unknown_roles.get(role, 0) + 1
        entry = {"file": self.display, "record_index": raw.index, "line": raw.line, "turn_index": turn,
                 "reason": err.reason, "detail": err.detail, "record": raw.value}
        try:
            line = _ENCODE_REJECT(entry)
        except RecursionError:
            entry["record"] = None  # too deep to write back; where it is stays known
            line = _ENCODE_REJECT(entry)
        chunk.rejects.append(line)

    def _check(self, target: Target, tools: list[dict], counts: Counts) -> Target:
        """Validate the reference calls; apply ``on_invalid``. RecordError when rejected."""
        if not target.calls:
            return target
        violations = validate_calls(target.calls, tools)
        if not violations:
            return target
        for kind in ("unknown_tool", "unresolvable_ref"):
            # always rejected: the system prompt cannot describe a tool that is not in the list,
            # nor one whose schema refers to something it does not hold
            found = [v for v in violations if v.kind == kind]
            if found:
                raise RecordError(kind, "; ".join(v.reason for v in found)[:500])
        if self.on_invalid == "keep":
            for v in violations:
                key = f"kept_{v.kind}"
                counts.warnings[key] = counts.warnings.get(key, 0) + 1
            return target
        if self.on_invalid == "coerce":
            by_name = {t["name"]: t for t in tools}
            calls, changed = [], 0
            for call in target.calls:
                args, n = coerce_arguments(call["arguments"], by_name[call["name"]]["parameters"])
                calls.append({"name": call["name"], "arguments": args})
                changed += n
            remaining = validate_calls(calls, tools) if changed else violations
            if not remaining:
                counts.coerced += changed
                return Target(target.think, calls, target.response)
            violations = remaining
        raise RecordError(violations[0].kind, "; ".join(v.reason for v in violations)[:500])

    def _read(self, raw: RawRecord, record_key: str) -> tuple[Any, list, list | None, Any]:
        """``(trace, its turn samples, the masked ones or None, the masked trace or None)``."""
        trace = READERS[self.reader_name].read(raw.value)
        if trace.n_samples == 0:
            raise RecordError("no_assistant_turn", "the record has no assistant turn")
        items = list(decompose(trace))
        if self.mask_fraction <= 0.0:
            return trace, items, None, None
        picked = [_hash_below(f"mask\x00{self.mask_seed}\x00{record_key}-{ts.turn_index}", self.mask_fraction)
                  for ts in items]
        if not any(picked):
            return trace, items, None, None
        masked = mask_trace(trace, random.Random(f"{self.mask_seed}\x00{record_key}"))
        return trace, items, [m if p else None for m, p in zip(decompose(masked), picked)], masked

    def _record(self, raw: RawRecord, chunk: Chunk) -> None:
        """Process one raw record: reject it whole, or account for each of its sample turns."""
        counts = chunk.counts
        counts.records_read += 1
        if raw.error is not None:
            counts.records_rejected += 1
            self._reject(chunk, raw, None, RecordError(raw.reason, raw.error))
            return
        record_key = f"{self.reader_name}-{self.file_key}-{raw.index}"
        try:
            trace, items, masked_items, masked = self._read(raw, record_key)
        except RecursionError:
            counts.records_rejected += 1
            self._reject(chunk, raw, None, _TOO_DEEP)
            return
        except RecordError as err:
            counts.records_rejected += 1
            self._reject(chunk, raw, None, err)
            return
        for kind in trace.warnings:
            counts.warnings[kind] = counts.warnings.get(kind, 0) + 1
        split = split_of(record_key, self.val_fraction, self.seed)
        plain_tools_json = trace.tools_json or _ENCODE(trace.tools)
        masked_tools_json = _ENCODE(masked.tools) if masked is not None else None
        written = 0
        for i, ts in enumerate(items):
            counts.turns += 1
            is_masked = masked_items is not None and masked_items[i] is not None
            if is_masked:
                ts, tools, tools_json = masked_items[i], masked.tools, masked_tools_json
            else:
                tools, tools_json = trace.tools, plain_tools_json
            if self._turn(chunk, raw, ts, split, record_key, tools, tools_json):
                counts.masked += is_masked
                written += 1
        counts.samples_written += written
        if written:
            counts.records_with_samples += 1
        else:
            counts.records_without_samples += 1

    def _turn(self, chunk: Chunk, raw: RawRecord, ts: Any, split: str, record_key: str, tools: list[dict],
              tools_json: str) -> bool:
        """Validate, render and tag one turn sample ``ts``; append its row (and chat export line)
        to ``chunk``, or its reject. True when a row was written."""
        counts = chunk.counts
        sample_id = f"{record_key}-{ts.turn_index}"
        try:
            if ts.error is not None:
                raise ts.error
            target = self._check(ts.target, tools, counts)
            text = render_target(target.think, target.calls, target.response)
            history_json = _ENCODE(ts.history)
            target_json = _ENCODE(target.to_dict())
            err = _surrogate(tools_json, history_json, target_json)
            if err is not None:
                raise err
            spans_json = _ENCODE([(a, b, r.name) for a, b, r in tag(text)])
            export = _ENCODE(chat_record(sample_id, tools, ts.history, target)) if self.export else None
        except RecursionError:
            counts.turns_rejected += 1
            self._reject(chunk, raw, ts.turn_index, _TOO_DEEP)
            return False
        except RecordError as err:
            counts.turns_rejected += 1
            self._reject(chunk, raw, ts.turn_index, err)
            return False
        cols = chunk.columns[split]
        for name, value in (
            ("id", sample_id),
            ("source", self.reader_name),
            ("input_file", Path(self.display).name),
            ("record_index", raw.index),
            ("turn_index", ts.turn_index),
            ("split", split),
            ("tools_json", tools_json),
            ("messages_json", history_json),
            ("target_json", target_json),
            ("target_text", text),
            ("spans_json", spans_json),
            ("n_calls", len(target.calls)),
            ("n_history", len(ts.history)),
        ):
            cols[name].append(value)
        if export is not None:
            chunk.exports.append(export)
        return True
