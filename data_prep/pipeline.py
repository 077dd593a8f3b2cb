"""``prepare``: raw files -> a ``datasets.DatasetDict`` of samples, a manifest and the rejects.

Flow per input file: sniff the container, detect (or force) the layout from the first record,
then stream records -> reader -> :class:`~data_prep.records.Trace` -> one
:class:`~data_prep.decompose.TurnSample` per assistant turn -> validation of the reference calls
against the normalised tool schemas -> rendered target + region spans -> a row of the split its
record hashes to. Rows go to disk in Arrow batches, so memory stays bounded whatever the input
size.

Accounting (``manifest.json``, per input and per source), which always reconciles:

* ``records_read = records_rejected + records_with_samples + records_without_samples``:
  a record is rejected as a whole when no trace can be read from it, otherwise each of its
  sample turns is accounted for;
* ``turns = samples_written + turns_rejected`` over the records that were read;
* every reject (record- or turn-level) is one line of ``rejects.jsonl`` with where it was, the
  reason, a detail and the raw record, and one count under ``rejected[reason]``.

A record with some good and some bad assistant turns keeps its good turns: each bad turn is a
reject of its own (``turn_index`` set). A turn rejected for its schema (a call that breaks its
tool's parameters) still appears in later turns' history, since it parsed and it is what
happened; a turn that does not parse makes the later turns ``unparseable_history`` rejects.

Records that name a role their layout does not have are rejected as ``bad_role`` and the roles
counted under ``unknown_roles[role]``; when more than half of a file's turns (and whole-record
rejects) go to one reason, the manifest's ``warnings`` say so in one line. An input whose
content (sha256) equals an earlier input's is read once: it is listed with ``duplicate_of`` and
counted under ``duplicate_inputs``, so sample ids stay unique.

Nothing is written to ``out_dir`` unless the whole run succeeds: output is built in a sibling
staging directory and moved into place at the end (:mod:`data_prep.output`). Re-running on the
same inputs and options gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import random
import re
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep import output
from data_prep.decompose import decompose
from data_prep.export import chat_record
from data_prep.inputs import InputError, RawRecord, file_sha256, iter_records, sniff_container
from data_prep.masking import mask_trace
from data_prep.readers import DETECT_RECORDS, FORMATS, READERS, LayoutError, detect_file
from data_prep.records import RecordError, Target
from data_prep.samples import COLUMNS, SCHEMA_VERSION, arrow_schema
from data_prep.schema import coerce_arguments
from restlit import __version__
from restlit.prompts import render_target
from restlit.regions import tag
from restlit.toolcalls import validate_calls

ON_INVALID = ("reject", "keep", "coerce")
SPLITS = ("train", "validation")
_BATCH_ROWS = 2048
# records per unit of work handed to a worker process
_CHUNK_RECORDS = 512
# below this much input, starting worker processes costs more than it saves
_PARALLEL_MIN_BYTES = 8 << 20

# progress(input path as given, bytes done, total bytes)
ProgressFn = Callable[[str, int, int], None]


@dataclass
class Counts:
    """What happened to the records of one input or one source (see the module docstring)."""

    records_read: int = 0
    records_rejected: int = 0
    records_with_samples: int = 0
    records_without_samples: int = 0
    turns: int = 0
    samples_written: int = 0
    turns_rejected: int = 0
    coerced: int = 0
    masked: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    unknown_roles: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        """True when every record and every turn read is accounted for exactly once."""
        return (
            self.records_read == self.records_rejected + self.records_with_samples + self.records_without_samples
            and self.turns == self.samples_written + self.turns_rejected
            and sum(self.rejected.values()) == self.records_rejected + self.turns_rejected
        )

    def add(self, other: Counts) -> None:
        """Accumulate ``other`` into this one."""
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.rejected, other.rejected), (self.warnings, other.warnings),
                             (self.unknown_roles, other.unknown_roles)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; reason and warning keys sorted for stable output."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _COUNT_FIELDS}
        out["rejected"] = dict(sorted(self.rejected.items()))
        out["warnings"] = dict(sorted(self.warnings.items()))
        out["unknown_roles"] = dict(sorted(self.unknown_roles.items()))
        return out

    def majority_reject(self) -> str | None:
        """``"N of M ... rejected as REASON"`` when one reason took more than half of the turns
        (a record rejected whole counts as one), else None."""
        units = self.turns + self.records_rejected
        if not self.rejected:
            return None
        reason, n = max(sorted(self.rejected.items()), key=lambda kv: kv[1])
        if n * 2 <= units:
            return None
        roles = ", ".join(f"{r} {c}" for r, c in sorted(self.unknown_roles.items(), key=lambda kv: -kv[1]))
        extra = f" (unknown roles: {roles})" if reason == "bad_role" and roles else ""
        return f"{n} of {units} turns and records rejected as {reason}{extra}"


_COUNT_FIELDS = ("records_read", "records_rejected", "records_with_samples", "records_without_samples", "turns",
                 "samples_written", "turns_rejected", "coerced", "masked")


@dataclass
class InputInfo:
    """One input file: where, what, and its counts."""

    path: str
    sha256: str
    bytes: int
    container: str
    format: str
    counts: Counts = field(default_factory=Counts)
    duplicate_of: str | None = None  # an earlier input with the same content: not read again

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "container": self.container,
               "format": self.format, "counts": self.counts.to_dict()}
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


@dataclass
class Manifest:
    """The record of one ``prepare`` run, written to ``manifest.json``."""

    options: dict[str, Any]
    inputs: list[InputInfo]
    splits: dict[str, int]
    # one line each: a file where one reason rejected most turns, an old output left behind
    warnings: list[str] = field(default_factory=list)

    @property
    def sources(self) -> dict[str, Counts]:
        """Counts summed per source (layout), in order of first appearance (duplicates left out)."""
        out: dict[str, Counts] = {}
        for info in self.inputs:
            if info.duplicate_of is None:
                out.setdefault(info.format, Counts()).add(info.counts)
        return out

    @property
    def totals(self) -> Counts:
        """Counts over all inputs."""
        total = Counts()
        for info in self.inputs:
            total.add(info.counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of manifest.json)."""
        return {
            "restlit_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "options": self.options,
            "inputs": [i.to_dict() for i in self.inputs],
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "totals": self.totals.to_dict(),
            "splits": self.splits,
            "duplicate_inputs": sum(1 for i in self.inputs if i.duplicate_of is not None),
            "warnings": self.warnings,
        }


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


class _SplitWriter:
    """Rows of one split -> an Arrow stream file (and a parquet file), in batches."""

    def __init__(self, arrow_path: Path, parquet_path: Path | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = arrow_schema()
        self.path = arrow_path
        self._sink = pa.OSFile(str(arrow_path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._parquet = pq.ParquetWriter(str(parquet_path), self.schema) if parquet_path else None
        self._columns: dict[str, list] = {name: [] for name, _ in COLUMNS}
        self.rows = 0

    def extend(self, columns: dict[str, list]) -> None:
        """Append rows given column-wise (every column the same length)."""
        for name, values in self._columns.items():
            values.extend(columns[name])
        self.rows += len(columns["id"])
        if len(self._columns["id"]) >= _BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._columns["id"]:
            return
        batch = pa.RecordBatch.from_pydict(self._columns, schema=self.schema)
        self._writer.write_batch(batch)
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        self._columns = {name: [] for name, _ in COLUMNS}

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        if self._parquet is not None:
            self._parquet.close()


@dataclass
class _Chunk:
    """What processing a run of records produced: columnar rows per split, reject lines, chat
    export lines, counts."""

    columns: dict[str, dict[str, list]]
    rejects: list[str]
    exports: list[str]
    counts: Counts


# a lone UTF-16 surrogate (a "\\ud800" escape in the JSON): Python keeps it, UTF-8 cannot store it
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate(*texts: str) -> RecordError | None:
    for text in texts:
        m = _SURROGATE.search(text)
        if m:
            return RecordError("lone_surrogate", f"the text holds a lone UTF-16 surrogate (\\u{ord(m.group()):04x}), "
                                                 "which UTF-8 cannot store")
    return None


_TOO_DEEP = RecordError("too_deep", "nested deeper than Python can walk")


@dataclass(frozen=True)
class _Processor:
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

    def __call__(self, records: list[RawRecord]) -> _Chunk:
        chunk = _Chunk({s: {name: [] for name, _ in COLUMNS} for s in SPLITS}, [], [], Counts())
        for raw in records:
            self._record(raw, chunk)
        return chunk

    def _reject(self, chunk: _Chunk, raw: RawRecord, turn: int | None, err: RecordError) -> None:
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
        unknown = [v for v in violations if v.kind == "unknown_tool"]
        if unknown:
            # always rejected: the system prompt cannot describe a tool that is not in the list
            raise RecordError("unknown_tool", "; ".join(v.reason for v in unknown)[:500])
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

    def _record(self, raw: RawRecord, chunk: _Chunk) -> None:
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
        cols = chunk.columns[split]
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
                continue
            except RecordError as err:
                counts.turns_rejected += 1
                self._reject(chunk, raw, ts.turn_index, err)
                continue
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
            counts.masked += is_masked
            written += 1
        counts.samples_written += written
        if written:
            counts.records_with_samples += 1
        else:
            counts.records_without_samples += 1


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
_ENCODE_REJECT = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _chunks(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    chunk: list[RawRecord] = []
    for raw in records:
        chunk.append(raw)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _map_ordered(fn: Callable, items: Iterator, pool: Any, window: int) -> Iterator:
    """``map(fn, items)`` in order, on ``pool`` when given, with at most ``window`` chunks in flight
    (``Pool.imap`` would read the whole input ahead of the workers). A chunk that cannot be sent
    to a worker (a record nested too deeply to pickle) is processed here instead."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()

    def result() -> Any:
        item, future = pending.popleft()
        try:
            return future.result()
        except (RecursionError, pickle.PicklingError):
            return fn(item)

    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            yield result()
    while pending:
        yield result()


def _open_input(path: Path, display: str, fmt: str) -> InputInfo:
    """Check one input up front: readable, a known container, a known (or forced) layout."""
    if not path.exists():
        raise InputError(f"{display}: no such file")
    if not path.is_file():
        raise InputError(f"{display}: not a file")
    sha = file_sha256(path)
    container = sniff_container(path)
    if fmt == "auto":
        with contextlib.closing(iter_records(path, container)) as records:
            first = list(itertools.islice(records, DETECT_RECORDS))
        if not first:
            raise InputError(f"{display}: contains no records")
        decoded = [(r.index, r.value) for r in first if r.error is None]
        if not decoded:
            raise InputError(f"{display}: not JSON ({first[0].error})")
        try:
            fmt = detect_file(decoded).name
        except LayoutError as exc:
            raise InputError(f"{display}: {exc}") from None
    return InputInfo(display, sha, path.stat().st_size, container, fmt)


def _save_dataset(staging: Path, writers: dict[str, _SplitWriter], fingerprint_seed: str) -> None:
    """Turn the staged Arrow streams into a DatasetDict saved at ``staging`` (deterministic)."""
    import datasets
    from datasets.table import MemoryMappedTable
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    splits = {}
    for name, writer in writers.items():
        table = MemoryMappedTable.from_file(str(writer.path))
        # fingerprint from the inputs and options, not from temporary paths: reruns are identical
        fingerprint = hashlib.sha256(f"{fingerprint_seed}\x00{name}".encode()).hexdigest()[:16]
        splits[name] = datasets.Dataset(table, split=datasets.NamedSplit(name), fingerprint=fingerprint)
    # the caller owns progress reporting; datasets' own bars would interleave with it
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        # datasets computes 0 shards for an empty split and then cannot load it back: ask for
        # one shard there; other splits keep datasets' size-based sharding
        empty = {name: 1 for name, ds in splits.items() if ds.num_rows == 0}
        datasets.DatasetDict(splits).save_to_disk(str(staging), num_shards=empty or None)
    finally:
        if not was_disabled:
            enable_progress_bars()
    del splits
    shutil.rmtree(staging / ".arrow")


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def prepare(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    format: str = "auto",
    on_invalid: str = "reject",
    val_fraction: float = 0.05,
    seed: int = 0,
    parquet: bool = False,
    mask_names: float = 0.0,
    mask_seed: int = 0,
    export_chat: str | os.PathLike | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> Manifest:
    """Prepare raw tool-use files into training samples at ``out_dir``; return the manifest.

    ``out_dir`` receives a ``datasets.DatasetDict`` (``train`` / ``validation``, split by a hash
    of the record id and ``seed``, ``val_fraction`` of records to validation), ``manifest.json``,
    ``rejects.jsonl`` and with ``parquet`` a ``parquet/{split}.parquet`` copy. An existing
    ``out_dir`` must be empty, or a previous output (has ``manifest.json``, holds nothing else
    prepare did not write) and ``overwrite`` given; it is replaced atomically (:mod:`data_prep.output`).

    ``format`` forces one layout for every input (default: detected per file from its first
    records). ``on_invalid`` decides what happens to a reference call that breaks its tool's
    schema: ``reject`` the turn, ``keep`` it (counted as ``kept_<kind>`` warnings), or
    ``coerce`` the values that can be converted safely and reject the turn if it still fails.
    Calls to unknown tools are always rejected. ``mask_names`` is the fraction of samples
    (picked by a hash of the sample id and ``mask_seed``) whose tool and parameter names are
    replaced by random identifiers (:mod:`data_prep.masking`); ``export_chat`` also writes
    every sample to that JSON-lines file in the chat layout (:mod:`data_prep.export`), which
    must not exist unless ``overwrite``. ``workers`` processes share the per-record work
    on inputs of 8 MB or more (default: the CPU count, at most 8; 1 runs everything in this
    process); the output does not depend on it. Workers are started with the ``spawn`` method,
    so a calling script needs the usual ``if __name__ == "__main__":`` guard (or ``workers=1``).

    Raises :class:`~data_prep.inputs.InputError` (one line, naming the file) for an unusable
    input, option or output; nothing is written then.
    """
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if on_invalid not in ON_INVALID:
        raise InputError(f"--on-invalid {on_invalid!r}: expected one of {', '.join(ON_INVALID)}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: expected a number in [0, 1)")
    if not 0.0 <= mask_names <= 1.0:
        raise InputError(f"--mask-names {mask_names}: expected a fraction in [0, 1]")
    if not inputs:
        raise InputError("no input files given")
    workers = _default_workers() if workers is None else max(1, workers)
    paths = [Path(p) for p in inputs]
    seen: dict[Path, str] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"{p}: given twice (also as {seen[key]})")
        seen[key] = str(p)
    out = Path(out_dir)
    output.check(out, paths, overwrite)
    export = Path(export_chat) if export_chat is not None else None
    if export is not None:
        _check_export(export, out, paths, overwrite)
    infos = [_open_input(p, str(p), format) for p in paths]
    first_of: dict[str, str] = {}
    for info in infos:
        info.duplicate_of = first_of.setdefault(info.sha256, info.path)
        if info.duplicate_of == info.path:
            info.duplicate_of = None

    staging = output.staging_dir(out)
    try:
        try:
            manifest = _write(staging, paths, infos, export is not None,
                              {"format": format, "on_invalid": on_invalid, "val_fraction": val_fraction, "seed": seed,
                               "parquet": parquet, "mask_names": mask_names, "mask_seed": mask_seed},
                              workers, progress)
        except OSError as exc:
            raise InputError(f"{out}: cannot write the dataset ({exc.strerror or exc})") from None
        if export is not None:
            # the chat file first: once the dataset is in place, nothing is left to fail
            try:
                shutil.move(staging / _EXPORT_NAME, export)
            except OSError as exc:
                raise InputError(f"{export}: cannot write ({exc.strerror or exc})") from None
        manifest.warnings.extend(output.replace(staging, out, overwrite))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


_EXPORT_NAME = "chat.jsonl"


def _check_export(export: Path, out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    if export.is_dir():
        raise InputError(f"--export-chat {export}: is a directory")
    if export.exists() and not overwrite:
        raise InputError(f"--export-chat {export}: already exists; use another name or --overwrite")
    resolved = export.resolve()
    if resolved in {p.resolve() for p in inputs}:
        raise InputError(f"--export-chat {export}: is one of the inputs")
    if out.resolve() in resolved.parents:
        raise InputError(f"--export-chat {export}: is inside the output directory {out}")
    if not export.parent.is_dir():
        raise InputError(f"--export-chat {export}: no such directory {export.parent}")


def _write(staging: Path, paths: list[Path], infos: list[InputInfo], export: bool, options: dict[str, Any],
           workers: int, progress: ProgressFn | None) -> Manifest:
    """Read every input into ``staging``: the dataset, manifest.json, rejects.jsonl and the chat
    export (as ``staging/chat.jsonl``, moved out by the caller)."""
    (staging / ".arrow").mkdir()
    if options["parquet"]:
        (staging / "parquet").mkdir()
    writers = {
        s: _SplitWriter(staging / ".arrow" / f"{s}.arrow",
                        staging / "parquet" / f"{s}.parquet" if options["parquet"] else None)
        for s in SPLITS
    }
    pool = None
    if workers > 1 and sum(i.bytes for i in infos if i.duplicate_of is None) >= _PARALLEL_MIN_BYTES:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent has pyarrow's threads running
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        # a lone surrogate in a raw record is written as its JSON escape, so the line stays valid JSON
        with open(staging / "rejects.jsonl", "w", encoding="utf-8", errors="backslashreplace") as rejects, \
                (open(staging / _EXPORT_NAME, "w", encoding="utf-8") if export else contextlib.nullcontext()) as chat:
            for path, info in zip(paths, infos):
                if info.duplicate_of is not None:
                    continue
                processor = _Processor(info.format, info.path, info.sha256[:12], options["on_invalid"],
                                       options["val_fraction"], options["seed"], options["mask_names"],
                                       options["mask_seed"], export)
                report = None
                if progress is not None:
                    def report(done: int, _name: str = info.path, _total: int = info.bytes) -> None:
                        progress(_name, done, _total)
                chunks = _chunks(iter_records(path, info.container, report), _CHUNK_RECORDS)
                for chunk in _map_ordered(processor, chunks, pool, 2 * workers + 2):
                    for split, columns in chunk.columns.items():
                        writers[split].extend(columns)
                    rejects.writelines(line + "\n" for line in chunk.rejects)
                    if chat is not None:
                        chat.writelines(line + "\n" for line in chunk.exports)
                    info.counts.add(chunk.counts)
                if progress is not None:
                    progress(info.path, info.bytes, info.bytes)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        for w in writers.values():
            w.close()
    fingerprint_seed = json.dumps([SCHEMA_VERSION, __version__, options, [i.sha256 for i in infos]])
    _save_dataset(staging, writers, fingerprint_seed)
    warnings = [f"{i.path}: {line}" for i in infos if (line := i.counts.majority_reject())]
    manifest = Manifest(options, infos, {s: w.rows for s, w in writers.items()}, warnings)
    (staging / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return manifest
