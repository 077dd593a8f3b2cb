"""``prepare``: raw files -> a ``datasets.DatasetDict`` of samples, a manifest and the rejects.

Flow per input file: sniff the container, detect (or force) the layout from the first record,
then stream records -> reader -> :class:`~restlit.data_prep.records.Trace` -> one
:class:`~restlit.data_prep.decompose.TurnSample` per assistant turn -> validation of the
reference calls against the normalised tool schemas -> rendered target + region spans -> a row
of the split its record hashes to. Rows go to disk in Arrow batches, so memory stays bounded
whatever the input size.

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
staging directory and moved into place at the end (:mod:`restlit.data_prep.output`). Re-running on the
same inputs and options gives byte-identical files.

This module is the orchestration (option checks, inputs, worker processes, staging); the
accounting lives in :mod:`restlit.data_prep.manifest`, the per-record work in
:mod:`restlit.data_prep.process` and the Arrow output in :mod:`restlit.data_prep.arrow_writer`.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import pickle
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from restlit import __version__
from restlit.data_prep import output
from restlit.data_prep.arrow_writer import SplitWriter, save_dataset
from restlit.data_prep.inputs import InputError, RawRecord, file_sha256, iter_records, sniff_container
from restlit.data_prep.manifest import Counts, InputInfo, Manifest
from restlit.data_prep.process import SPLITS, Processor, split_of
from restlit.data_prep.readers import DETECT_RECORDS, FORMATS, LayoutError, detect_file
from restlit.data_prep.samples import SCHEMA_VERSION
from restlit.runtime.outputs import raise_if_stopped, sigterm_shield, stop_on_sigterm

__all__ = ["ON_INVALID", "SPLITS", "Counts", "InputInfo", "Manifest", "ProgressFn", "prepare", "split_of"]

ON_INVALID = ("reject", "keep", "coerce")
# records per unit of work handed to a worker process
_CHUNK_RECORDS = 512
# below this much input, starting worker processes costs more than it saves
_PARALLEL_MIN_BYTES = 8 << 20
# the chat export's name inside the staging directory
_EXPORT_NAME = "chat.jsonl"

# progress(input path as given, bytes done, total bytes)
ProgressFn = Callable[[str, int, int], None]


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
    prepare did not write) and ``overwrite`` given; it is replaced atomically
    (:mod:`restlit.data_prep.output`).

    ``format`` forces one layout for every input (default: detected per file from its first
    records). ``on_invalid`` decides what happens to a reference call that breaks its tool's
    schema: ``reject`` the turn, ``keep`` it (counted as ``kept_<kind>`` warnings), or
    ``coerce`` the values that can be converted safely and reject the turn if it still fails.
    Calls to unknown tools, and to tools whose schema has a ``$ref`` that does not resolve inside
    it, are always rejected. ``mask_names`` is the fraction of samples (picked by a hash of the
    sample id and ``mask_seed``) whose tool and parameter names are replaced by random
    identifiers (:mod:`restlit.data_prep.masking`); ``export_chat`` also writes every sample to that JSON-lines file in the chat layout (:mod:`restlit.data_prep.export`), which
    must not exist unless ``overwrite``. ``workers`` processes share the per-record work
    on inputs of 8 MB or more (default: the CPU count, at most 8; 1 runs everything in this
    process); the output does not depend on it. Workers are started with the ``spawn`` method,
    so a calling script needs the usual ``if __name__ == "__main__":`` guard (or ``workers=1``).

    Raises :class:`~restlit.data_prep.inputs.InputError` (one line, naming the file) for an unusable
    input, option or output; nothing is written then.
    """
    _check_options(format, on_invalid, val_fraction, mask_names)
    if not inputs:
        raise InputError("no input files given")
    workers = _default_workers() if workers is None else max(1, workers)
    paths = [Path(p) for p in inputs]
    _check_distinct(paths)
    out = Path(out_dir)
    output.check(out, paths, overwrite)
    export = Path(export_chat) if export_chat is not None else None
    if export is not None:
        _check_export(export, out, paths, overwrite)
    infos = [_open_input(p, str(p), format) for p in paths]
    _mark_duplicates(infos)

    staging: Path | None = None
    try:
        # SIGTERM raises where the run is, so the staging directory and the workers are cleaned up
        # as on any failure (Python's default SIGTERM ends the process at once, leaving both behind).
        # The staging directory is made under the handler, and whole: a stop that finds it is this one
        with stop_on_sigterm(f"prepare stopped by SIGTERM: nothing was written to {out}", InputError):
            with sigterm_shield():
                staging = output.staging_dir(out)
            manifest = _staged(staging, out, paths, infos, export, overwrite, workers, progress,
                               {"format": format, "on_invalid": on_invalid, "val_fraction": val_fraction,
                                "seed": seed, "parquet": parquet, "mask_names": mask_names, "mask_seed": mask_seed})
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _staged(staging: Path, out: Path, paths: list[Path], infos: list[InputInfo], export: Path | None,
            overwrite: bool, workers: int, progress: ProgressFn | None, options: dict[str, Any]) -> Manifest:
    """Write the dataset into ``staging``, then put it (and the chat export) in place."""
    try:
        manifest = _write(staging, paths, infos, export is not None, options, workers, progress)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the dataset ({exc.strerror or exc})") from None
    raise_if_stopped()  # a stop whose raise a finalizer swallowed: nothing is put in place
    if export is not None:
        # the chat file first: once the dataset is in place, nothing is left to fail
        _place(staging / _EXPORT_NAME, export)
    manifest.warnings.extend(output.replace(staging, out, overwrite))
    return manifest


def _check_options(format: str, on_invalid: str, val_fraction: float, mask_names: float) -> None:
    """Refuse an option value out of its range, naming the command-line flag."""
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if on_invalid not in ON_INVALID:
        raise InputError(f"--on-invalid {on_invalid!r}: expected one of {', '.join(ON_INVALID)}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: expected a number in [0, 1)")
    if not 0.0 <= mask_names <= 1.0:
        raise InputError(f"--mask-names {mask_names}: expected a fraction in [0, 1]")


def _check_distinct(paths: list[Path]) -> None:
    """Refuse a file given twice (under any spelling of its path)."""
    seen: dict[Path, str] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"{p}: given twice (also as {seen[key]})")
        seen[key] = str(p)


def _mark_duplicates(infos: list[InputInfo]) -> None:
    """Set ``duplicate_of`` on each input whose content equals an earlier input's."""
    first_of: dict[str, str] = {}
    for info in infos:
        info.duplicate_of = first_of.setdefault(info.sha256, info.path)
        if info.duplicate_of == info.path:
            info.duplicate_of = None


def _place(src: Path, export: Path) -> None:
    """Move the finished chat file to ``export``: a rename, or across file systems a copy into a
    temporary sibling that takes ``export``'s name only once complete (a full disk leaves no
    partial file behind). InputError naming ``export`` when it cannot be written."""
    try:
        os.rename(src, export)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise InputError(f"{export}: cannot write ({exc.strerror or exc})") from None
    fd, name = tempfile.mkstemp(prefix=f".{export.name}.tmp-", dir=export.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, name)
        os.replace(name, export)
    except OSError as exc:
        raise InputError(f"{export}: cannot write ({exc.strerror or exc})") from None
    finally:
        Path(name).unlink(missing_ok=True)


def _check_export(export: Path, out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse an ``--export-chat`` path that is unusable or would clobber an input or the output."""
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


def _default_workers() -> int:
    """The CPU count, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def _write(staging: Path, paths: list[Path], infos: list[InputInfo], export: bool, options: dict[str, Any],
           workers: int, progress: ProgressFn | None) -> Manifest:
    """Read every input into ``staging``: the dataset, manifest.json, rejects.jsonl and the chat
    export (as ``staging/chat.jsonl``, moved out by the caller)."""
    (staging / ".arrow").mkdir()
    if options["parquet"]:
        (staging / "parquet").mkdir()
    writers = {
        s: SplitWriter(staging / ".arrow" / f"{s}.arrow",
                       staging / "parquet" / f"{s}.parquet" if options["parquet"] else None)
        for s in SPLITS
    }
    pool = _start_pool(workers, infos)
    try:
        # a lone surrogate in a raw record is written as its JSON escape, so the line stays valid JSON
        with open(staging / "rejects.jsonl", "w", encoding="utf-8", errors="backslashreplace") as rejects, \
                (open(staging / _EXPORT_NAME, "w", encoding="utf-8") if export else contextlib.nullcontext()) as chat:
            for path, info in zip(paths, infos):
                if info.duplicate_of is None:
                    processor = Processor(info.format, info.path, info.sha256[:12], options["on_invalid"],
                                          options["val_fraction"], options["seed"], options["mask_names"],
                                          options["mask_seed"], export)
                    _write_input(path, info, processor, (writers, rejects, chat), pool, workers, progress)
    except BaseException:
        if pool is not None:  # stopped (SIGTERM, Ctrl-C) or failed: the workers go now, not when idle
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()  # a worker spawned after SIGTERM's handler set SIG_IGN ignores terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        for w in writers.values():
            w.close()
    fingerprint_seed = json.dumps([SCHEMA_VERSION, __version__, options, [i.sha256 for i in infos]])
    save_dataset(staging, writers, fingerprint_seed)
    warnings = [f"{i.path}: {line}" for i in infos if (line := i.counts.majority_reject())]
    manifest = Manifest(options, infos, {s: w.rows for s, w in writers.items()}, warnings)
    (staging / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return manifest


def _start_pool(workers: int, infos: list[InputInfo]) -> Any:
    """A pool of ``workers`` spawned processes when there are several and the input is large
    enough to repay starting them, else None."""
    if workers > 1 and sum(i.bytes for i in infos if i.duplicate_of is None) >= _PARALLEL_MIN_BYTES:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent has pyarrow's threads running
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return None


def _write_input(path: Path, info: InputInfo, processor: Processor,
                 sinks: tuple[dict[str, SplitWriter], IO, IO | None], pool: Any, workers: int,
                 progress: ProgressFn | None) -> None:
    """Stream one input through ``processor`` (on ``pool`` when given) into ``sinks`` (the split
    writers, rejects.jsonl and the chat export or None), adding up its counts in ``info``."""
    writers, rejects, chat = sinks
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


def _chunks(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    """``records`` in lists of ``size`` (the last one shorter): the unit of work of a worker."""
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
        with sigterm_shield():  # a worker cut off while handed its start prints a traceback
            pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            yield result()
    while pending:
        yield result()
