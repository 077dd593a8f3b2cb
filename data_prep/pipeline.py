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

Nothing is written to ``out_dir`` unless the whole run succeeds: output is built in a sibling
staging directory and moved into place at the end. Re-running on the same inputs and options
gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.decompose import decompose
from data_prep.inputs import InputError, RawRecord, file_sha256, iter_records, sniff_container
from data_prep.readers import FORMATS, READERS, describe, detect
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
    rejected: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        """True when every record and every turn read is accounted for exactly once."""
        return (
            self.records_read == self.records_rejected + self.records_with_samples + self.records_without_samples
            and self.turns == self.samples_written + self.turns_rejected
            and sum(self.rejected.values()) == self.records_rejected + self.turns_rejected
        )

    def add(self, other: Counts) -> None:
        """Accumulate ``other`` into this one."""
        for name in ("records_read", "records_rejected", "records_with_samples", "records_without_samples",
                     "turns", "samples_written", "turns_rejected", "coerced"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.rejected, other.rejected), (self.warnings, other.warnings)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; reason and warning keys sorted for stable output."""
        out = {k: getattr(self, k) for k in ("records_read", "records_rejected", "records_with_samples",
                                              "records_without_samples", "turns", "samples_written",
                                              "turns_rejected", "coerced")}
        out["rejected"] = dict(sorted(self.rejected.items()))
        out["warnings"] = dict(sorted(self.warnings.items()))
        return out


@dataclass
class InputInfo:
    """One input file: where, what, and its counts."""

    path: str
    sha256: str
    bytes: int
    container: str
    format: str
    counts: Counts = field(default_factory=Counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "container": self.container,
                "format": self.format, "counts": self.counts.to_dict()}


@dataclass
class Manifest:
    """The record of one ``prepare`` run, written to ``manifest.json``."""

    options: dict[str, Any]
    inputs: list[InputInfo]
    splits: dict[str, int]

    @property
    def sources(self) -> dict[str, Counts]:
        """Counts summed per source (layout), in order of first appearance."""
        out: dict[str, Counts] = {}
        for info in self.inputs:
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
        }


def split_of(record_key: str, val_fraction: float, seed: int) -> str:
    """``"validation"`` for a stable pseudo-random ``val_fraction`` of record keys, else ``"train"``.

    Keyed on the record, not the turn, so all samples of one dialogue land in the same split
    (a later turn's history contains the earlier turns' targets).
    """
    digest = hashlib.sha256(f"{seed}\x00{record_key}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") < val_fraction * 2.0**64 else "train"


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
    """What processing a run of records produced: columnar rows per split, reject lines, counts."""

    columns: dict[str, dict[str, list]]
    rejects: list[str]
    counts: Counts


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

    def __call__(self, records: list[RawRecord]) -> _Chunk:
        chunk = _Chunk({s: {name: [] for name, _ in COLUMNS} for s in SPLITS}, [], Counts())
        for raw in records:
            self._record(raw, chunk)
        return chunk

    def _reject(self, chunk: _Chunk, raw: RawRecord, turn: int | None, err: RecordError) -> None:
        chunk.counts.rejected[err.reason] = chunk.counts.rejected.get(err.reason, 0) + 1
        entry = {"file": self.display, "record_index": raw.index, "line": raw.line, "turn_index": turn,
                 "reason": err.reason, "detail": err.detail, "record": raw.value}
        chunk.rejects.append(_ENCODE_REJECT(entry))

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

    def _record(self, raw: RawRecord, chunk: _Chunk) -> None:
        counts = chunk.counts
        counts.records_read += 1
        if raw.error is not None:
            counts.records_rejected += 1
            self._reject(chunk, raw, None, RecordError("invalid_json", raw.error))
            return
        try:
            trace = READERS[self.reader_name].read(raw.value)
            if trace.n_samples == 0:
                raise RecordError("no_assistant_turn", "the record has no assistant turn")
        except RecordError as err:
            counts.records_rejected += 1
            self._reject(chunk, raw, None, err)
            return
        for kind in trace.warnings:
            counts.warnings[kind] = counts.warnings.get(kind, 0) + 1
        record_key = f"{self.reader_name}-{self.file_key}-{raw.index}"
        split = split_of(record_key, self.val_fraction, self.seed)
        cols = chunk.columns[split]
        tools_json = trace.tools_json or _ENCODE(trace.tools)
        written = 0
        for ts in decompose(trace):
            counts.turns += 1
            try:
                if ts.error is not None:
                    raise ts.error
                target = self._check(ts.target, trace.tools, counts)
            except RecordError as err:
                counts.turns_rejected += 1
                self._reject(chunk, raw, ts.turn_index, err)
                continue
            text = render_target(target.think, target.calls, target.response)
            for name, value in (
                ("id", f"{record_key}-{ts.turn_index}"),
                ("source", self.reader_name),
                ("input_file", Path(self.display).name),
                ("record_index", raw.index),
                ("turn_index", ts.turn_index),
                ("split", split),
                ("tools_json", tools_json),
                ("messages_json", _ENCODE(ts.history)),
                ("target_json", _ENCODE(target.to_dict())),
                ("target_text", text),
                ("spans_json", _ENCODE([(a, b, r.name) for a, b, r in tag(text)])),
                ("n_calls", len(target.calls)),
                ("n_history", len(ts.history)),
            ):
                cols[name].append(value)
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
    (``Pool.imap`` would read the whole input ahead of the workers)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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
            first = next(records, None)
        if first is None:
            raise InputError(f"{display}: contains no records")
        if first.error is not None:
            raise InputError(f"{display}: not JSON ({first.error})")
        reader = detect(first.value)
        if reader is None:
            raise InputError(
                f"{display}: unrecognised layout (first record is {describe(first.value)}); "
                f"expected one of {', '.join(READERS)} (see --format)"
            )
        fmt = reader.name
    return InputInfo(display, sha, path.stat().st_size, container, fmt)


def _check_out_dir(out_dir: Path, inputs: Sequence[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise InputError(f"{out_dir}: exists, is not empty and is not a prepared dataset (no manifest.json); "
                         "choose another output directory")
    resolved = out_dir.resolve()
    for p in inputs:
        if resolved == p.resolve() or resolved in p.resolve().parents:
            raise InputError(f"{out_dir}: the output directory contains the input {p}")


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
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> Manifest:
    """Prepare raw tool-use files into training samples at ``out_dir``; return the manifest.

    ``out_dir`` receives a ``datasets.DatasetDict`` (``train`` / ``validation``, split by a hash
    of the record id and ``seed``, ``val_fraction`` of records to validation), ``manifest.json``,
    ``rejects.jsonl`` and with ``parquet`` a ``parquet/{split}.parquet`` copy. An existing
    ``out_dir`` is replaced only if it is empty or a previous output (has ``manifest.json``).

    ``format`` forces one layout for every input (default: detected per file from its first
    record). ``on_invalid`` decides what happens to a reference call that breaks its tool's
    schema: ``reject`` the turn, ``keep`` it (counted as ``kept_<kind>`` warnings), or
    ``coerce`` the values that can be converted safely and reject the turn if it still fails.
    Calls to unknown tools are always rejected. ``workers`` processes share the per-record work
    on inputs of 8 MB or more (default: the CPU count, at most 8; 1 runs everything in this
    process); the output does not depend on it. Workers are started with the ``spawn`` method,
    so a calling script needs the usual ``if __name__ == "__main__":`` guard (or ``workers=1``).

    Raises :class:`~data_prep.inputs.InputError` (one line, naming the file) for an unusable
    input or option; nothing is written then.
    """
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if on_invalid not in ON_INVALID:
        raise InputError(f"--on-invalid {on_invalid!r}: expected one of {', '.join(ON_INVALID)}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: expected a number in [0, 1)")
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
    _check_out_dir(out, paths)
    infos = [_open_input(p, str(p), format) for p in paths]

    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        (staging / ".arrow").mkdir()
        if parquet:
            (staging / "parquet").mkdir()
        writers = {
            s: _SplitWriter(staging / ".arrow" / f"{s}.arrow",
                            staging / "parquet" / f"{s}.parquet" if parquet else None)
            for s in SPLITS
        }
        pool = None
        if workers > 1 and sum(i.bytes for i in infos) >= _PARALLEL_MIN_BYTES:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent has pyarrow's threads running
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            with open(staging / "rejects.jsonl", "w", encoding="utf-8") as rejects:
                for path, info in zip(paths, infos):
                    processor = _Processor(info.format, info.path, info.sha256[:12], on_invalid, val_fraction, seed)
                    report = None
                    if progress is not None:
                        def report(done: int, _name: str = info.path, _total: int = info.bytes) -> None:
                            progress(_name, done, _total)
                    chunks = _chunks(iter_records(path, info.container, report), _CHUNK_RECORDS)
                    for chunk in _map_ordered(processor, chunks, pool, 2 * workers + 2):
                        for split, columns in chunk.columns.items():
                            writers[split].extend(columns)
                        rejects.writelines(line + "\n" for line in chunk.rejects)
                        info.counts.add(chunk.counts)
                    if progress is not None:
                        progress(info.path, info.bytes, info.bytes)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            for w in writers.values():
                w.close()
        options = {"format": format, "on_invalid": on_invalid, "val_fraction": val_fraction, "seed": seed,
                   "parquet": parquet}
        fingerprint_seed = json.dumps([SCHEMA_VERSION, __version__, options, [i.sha256 for i in infos]])
        _save_dataset(staging, writers, fingerprint_seed)
        manifest = Manifest(options, infos, {s: w.rows for s, w in writers.items()})
        (staging / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
