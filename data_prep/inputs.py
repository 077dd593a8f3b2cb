"""Streaming raw records out of input files in bounded memory.

Containers: a JSON list (``[{...}, {...}]``), JSON lines (one record per line), concatenated
JSON values (pretty-printed objects one after another), or parquet (ToolRL's processed layout);
each optionally gzip-compressed (detected from the magic bytes, not the name). JSON lists are
decoded one element at a time with ``json.JSONDecoder.raw_decode`` over a sliding buffer, so a
37 MB ToolACE dump never sits in memory as one Python object.

A file that cannot be opened, is not one of these containers, or breaks mid-way raises
:class:`InputError` with a one-line message naming the file. A single JSON line that does not
decode is not fatal: it comes out as a :class:`RawRecord` with ``error`` set, to be rejected.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from restlit.errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_CHUNK = 1 << 20
# One record larger than this is treated as a broken file rather than read to the end.
MAX_RECORD_CHARS = 64 << 20
_WS = " \t\r\n"
# The raw text of an undecodable record kept in rejects.jsonl is cut at this length.
MAX_REJECT_CHARS = 10_000
_TOO_DEEP = "nested deeper than the JSON decoder allows"


class InputError(UserError):
    """A whole input file is unusable; the message is one line and names the file."""


@dataclass
class RawRecord:
    """One record as read: its 0-based ``index`` in the file, where it was, and the value.

    ``line`` is the 1-based line number for JSON lines (None otherwise). ``error`` is set (and
    ``value`` is the raw text, cut at ``MAX_REJECT_CHARS``) when the record did not decode;
    ``reason`` is then ``invalid_json``, or ``too_deep`` for a value nested deeper than Python's
    JSON decoder can go.
    """

    index: int
    value: Any
    line: int | None = None
    error: str | None = None
    reason: str = "invalid_json"


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file's bytes; raises InputError when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def _open_binary(path: Path) -> tuple[BinaryIO, BinaryIO, bool]:
    """``(raw file, decompressed stream, gzipped?)``; the raw file's position tracks progress."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned open; the caller closes it
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return raw, gzip.GzipFile(fileobj=raw, mode="rb"), True
    return raw, raw, False


def sniff_container(path: Path) -> str:
    """``"parquet"``, ``"json_list"`` or ``"json_stream"`` (JSON lines / concatenated values).

    Decided from the first bytes, after gzip decompression. Raises InputError for an empty
    file, a binary file or text that does not start like JSON.
    """
    raw, stream, gz = _open_binary(path)
    try:
        try:
            head = stream.read(4096)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: corrupt gzip data ({exc})") from None
    finally:
        raw.close()
    if head.startswith(_PARQUET_MAGIC):
        if gz:
            raise InputError(f"{path}: gzip-compressed parquet is not supported; decompress it first")
        return "parquet"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff" + _WS)
    if not text:
        raise InputError(f"{path}: the file is empty")
    if text[0] == "[":
        return "json_list"
    if text[0] == "{":
        return "json_stream"
    raise InputError(f"{path}: not JSON (expected a JSON list, JSON lines or parquet; starts with {text[:20]!r})")


class _Reader:
    """Text reader over the decompressed stream that reports progress in raw (on-disk) bytes."""

    def __init__(self, path: Path, progress: Callable[[int], None] | None) -> None:
        self.path = path
        self.raw, stream, _ = _open_binary(path)
        self.text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        self.progress = progress

    def read(self, n: int) -> str:
        try:
            chunk = self.text.read(n)
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{self.path}: corrupt or truncated file ({exc})") from None
        self._report()
        return chunk

    def readline(self) -> str:
        try:
            line = self.text.readline()
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{self.path}: corrupt or truncated file ({exc})") from None
        return line

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.raw.tell())

    def close(self) -> None:
        self._report()
        self.text.close()
        self.raw.close()


def _line_col(buf: str, pos: int, base_line: int) -> str:
    line = base_line + buf.count("\n", 0, pos)
    col = pos - (buf.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {col}"


def _iter_values(path: Path, reader: _Reader, in_list: bool) -> Iterator[RawRecord]:
    """Decode JSON values one at a time (list elements, or whitespace-separated values)."""
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False
    base_line = 1  # line number of buf[0], for error messages
    index = 0

    def fill() -> bool:
        nonlocal buf, pos, eof, base_line
        if eof:
            return False
        chunk = reader.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        # drop what has been consumed so the buffer stays about one chunk + one record
        base_line += buf.count("\n", 0, pos)
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip_ws() -> bool:
        """Advance past whitespace; False at end of input."""
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf):
                return True
            if not fill():
                return False

    skip_ws()
    if in_list:
        pos += 1  # the "[" sniff_container saw
    while True:
        if not skip_ws():
            if in_list:
                raise InputError(f"{path}: truncated JSON list (no closing ']')")
            return
        if in_list and buf[pos] == "]":
            pos += 1
            if skip_ws():
                raise InputError(f"{path}: unexpected text after the JSON list at {_line_col(buf, pos, base_line)}")
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except RecursionError:
                end = _value_end(buf, pos)
                if end is None:  # the value continues in the next chunk
                    if len(buf) - pos > MAX_RECORD_CHARS or not fill():
                        raise InputError(f"{path}: truncated JSON in record {index}") from None
                    continue
                value = RawRecord(index, buf[pos:end][:MAX_REJECT_CHARS], error=_TOO_DEEP, reason="too_deep")
                break
            except json.JSONDecodeError as exc:
                # maybe the value continues in the next chunk
                if len(buf) - pos > MAX_RECORD_CHARS or not fill():
                    raise InputError(
                        f"{path}: invalid JSON in record {index} at {_line_col(buf, exc.pos, base_line)}: {exc.msg}"
                    ) from None
                continue
            # a number or literal cut at the buffer end decodes "successfully" but short
            if end == len(buf) and not eof and fill():
                continue
            break
        yield value if isinstance(value, RawRecord) else RawRecord(index=index, value=value)
        index += 1
        pos = end
        if in_list:
            if not skip_ws():
                raise InputError(f"{path}: truncated JSON list (no closing ']')")
            if buf[pos] == ",":
                pos += 1
            elif buf[pos] != "]":
                raise InputError(
                    f"{path}: expected ',' or ']' after record {index - 1} at {_line_col(buf, pos, base_line)}"
                )


def _iter_lines(path: Path, reader: _Reader) -> Iterator[RawRecord]:
    """JSON lines: one record per non-blank line; an undecodable line is a record with ``error``."""
    index = 0
    line_no = 0
    while True:
        line = reader.readline()
        if not line:
            return
        line_no += 1
        if line_no % 1024 == 0:
            reader._report()
        text = line.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRecord(index=index, value=text, line=line_no, error=f"line {line_no}: {exc.msg}")
        except RecursionError:
            yield RawRecord(index=index, value=text[:MAX_REJECT_CHARS], line=line_no,
                            error=f"line {line_no}: {_TOO_DEEP}", reason="too_deep")
        else:
            yield RawRecord(index=index, value=value, line=line_no)
        index += 1


def _first_line_is_json(path: Path) -> bool:
    reader = _Reader(path, None)
    try:
        first = reader.readline()
        while first and not first.strip():
            first = reader.readline()
    finally:
        reader.close()
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    except RecursionError:  # a complete value, only too deep to decode
        return True
    return True


def _value_end(buf: str, pos: int) -> int | None:
    """End of the JSON array or object starting at ``buf[pos]``, found without recursion (the
    decoder's own recursion gave up); None when it does not end within ``buf``."""
    depth = 0
    in_string = False
    i = pos
    n = len(buf)
    while i < n:
        c = buf[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _iter_parquet(path: Path, progress: Callable[[int], None] | None) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: unreadable parquet ({exc})") from None
    size = os.path.getsize(path)
    total = pf.metadata.num_rows or 1
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield RawRecord(index=index, value=row)
                index += 1
            if progress is not None:
                progress(size * index // total)
    except pa.ArrowException as exc:
        raise InputError(f"{path}: unreadable parquet ({exc})") from None


def iter_records(path: Path, container: str, progress: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """Yield the records of ``path`` in file order; ``progress(bytes_done)`` in on-disk bytes.

    ``container`` comes from :func:`sniff_container`. ``json_stream`` files whose first line is
    a complete JSON value are read as JSON lines (a bad line becomes a rejected record);
    otherwise as concatenated JSON values (a syntax error ends the file with InputError).
    """
    if container == "parquet":
        yield from _iter_parquet(path, progress)
        return
    line_mode = container == "json_stream" and _first_line_is_json(path)
    reader = _Reader(path, progress)
    try:
        if line_mode:
            yield from _iter_lines(path, reader)
        else:
            yield from _iter_values(path, reader, in_list=container == "json_list")
    finally:
        reader.close()
