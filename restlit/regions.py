"""Region tagging of tool-use completions: which characters are format, reasoning, tool names,
parameter names, parameter values, response text or something else.

This module is a standalone library: it needs only the standard library, never torch or a
tokenizer. Tokenizers come in only as offset pairs. Turning the scanned calls into values and
checking them against tool schemas is :mod:`restlit.toolcalls`'s job (it reads the same scan, so
what is tagged TOOL_NAME / PARAM_NAME / PARAM_VALUE is what is parsed as a name, key and value).

The canonical output format (ToolRL's) is::

    <think> free-form reasoning </think>
    <tool_call>
    {"name": "Tool name", "parameters": {"p1": "v1", "p2": 2}}
    {"name": "Other tool", "parameters": {}}
    </tool_call>
    <response> text for the user </response>

Public API: :class:`Region`, :class:`Span`, :func:`tag`, :func:`token_regions`, :class:`Block`,
:func:`blocks`. For :mod:`restlit.toolcalls`: :func:`call_ranges`. The call scanner both
read is :mod:`restlit.callscan`.

Rules for malformed or truncated text (the scanner never raises):

* Tags are the six literals ``<think>`` ``</think>`` ``<tool_call>`` ``</tool_call>``
  ``<response>`` ``</response>``; a partial tag at the end of a truncated text is plain text.
* An opening tag outside any block opens a block of its kind. If its closing tag occurs later in
  the text, the block ends there and every tag in between is plain text of the block (so a
  ``<tool_call>`` mentioned inside the reasoning is THINK). If it is never closed, the block ends
  at the next opening tag of another kind, or at the end of the text.
* A closing tag outside any block (stray) is FORMAT; so is every tag that opens or closes a block.
  Duplicated blocks are each tagged on their own; text between blocks is OTHER.
* Inside ``<tool_call>`` the scanner reads a sequence of calls: JSON objects (one per line, or
  several on one line, or pretty-printed over lines), a JSON list of objects, or Python-call
  syntax ``[Tool Name(a="x", b=2), f(c=[1, 2])]``. JSON is read tolerantly: single-quoted
  strings, bare words (``True``, ``None``) and missing commas are accepted for tagging; a string
  ends at the end of its line at the latest. A call cut off by the end of the text keeps the
  regions of what was written (a half-written value is still PARAM_VALUE). On a syntax error the
  rest of the line is OTHER and scanning resumes on the next line. Lines that are not calls
  (prose, code fences) are OTHER.
* In a JSON call the string literal (quotes included) that is the value of ``"name"`` is
  TOOL_NAME; in the object under ``"parameters"`` or ``"arguments"`` each top-level key literal is
  PARAM_NAME and each value's whole text (nested objects and arrays included) is PARAM_VALUE.
  A ``"name"`` whose value is not a string, or a ``"parameters"`` that is not an object, gets no
  region beyond OTHER. In a Python call the name before ``(`` is TOOL_NAME, each keyword is
  PARAM_NAME and each argument's text is PARAM_VALUE.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from restlit.callscan import scan_calls, starts_like_call

__all__ = ["TOOLRL_BLOCKS", "Block", "BlockSyntax", "Region", "Span", "blocks", "call_spans", "partition", "tag",
           "token_regions"]



class Region(IntEnum):
    """The region of a character or token (see docs/method.md, "Regions")."""

    FORMAT = 0
    THINK = 1
    TOOL_NAME = 2
    PARAM_NAME = 3
    PARAM_VALUE = 4
    RESPONSE = 5
    OTHER = 6


class Span(NamedTuple):
    """Characters ``text[start:end]`` belong to ``region``."""

    start: int
    end: int
    region: Region


# A token covering several regions takes the first of these: no character of a name or value is
# ever lost to a neighbouring token (the released code dropped the last token of every span).
PRIORITY: tuple[Region, ...] = (
    Region.TOOL_NAME,
    Region.PARAM_NAME,
    Region.PARAM_VALUE,
    Region.FORMAT,
    Region.THINK,
    Region.RESPONSE,
    Region.OTHER,
)
_RANK = {r: i for i, r in enumerate(PRIORITY)}
_RANK_BYTE = {r: bytes([i]) for r, i in _RANK.items()}



@dataclass(frozen=True)
class BlockSyntax:
    """The tag-level syntax of an output format: the kinds of ``<kind> ... </kind>`` blocks, the
    region of each block's inside (``call_kinds`` are scanned for calls instead), and the region of
    text outside every block (``outside``; whitespace-only gaps stay OTHER). The output formats of
    :mod:`restlit.formats` pass theirs; the default is ToolRL's (:data:`TOOLRL_BLOCKS`)."""

    kinds: tuple[str, ...]
    inner: tuple[Region, ...]
    call_kinds: frozenset[str] = frozenset({"tool_call"})
    outside: Region = Region.OTHER

    @property
    def pattern(self) -> re.Pattern:
        return _tag_pattern(self.kinds)


def _tag_pattern(kinds: tuple[str, ...]) -> re.Pattern:
    pat = _PATTERNS.get(kinds)
    if pat is None:
        pat = _PATTERNS[kinds] = re.compile(r"<(/?)(" + "|".join(map(re.escape, kinds)) + r")>")
    return pat


_PATTERNS: dict[tuple[str, ...], re.Pattern] = {}
TOOLRL_BLOCKS = BlockSyntax(("think", "tool_call", "response"), (Region.THINK, Region.OTHER, Region.RESPONSE))


# --------------------------------------------------------------------------------------------
# Blocks: the tag-level structure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One ``<kind> ... </kind>`` block. ``start:end`` includes the tags, ``inner_start:inner_end``
    is the text between them. ``closed`` is False when the closing tag is missing (then
    ``end == inner_end``)."""

    kind: str
    start: int
    end: int
    inner_start: int
    inner_end: int
    closed: bool


def _scan_tags(text: str, syntax: BlockSyntax = TOOLRL_BLOCKS) -> tuple[list[Block], list[tuple[int, int]]]:
    """Blocks and stray closing tags (as character ranges), per the module's rules."""
    tags = [(m.start(), m.end(), m.group(1) == "/", m.group(2)) for m in syntax.pattern.finditer(text)]
    out: list[Block] = []
    stray: list[tuple[int, int]] = []
    # For each kind, the positions of its closing tags, so "is it closed later?" is a bisect.
    closes = {k: [t[0] for t in tags if t[2] and t[3] == k] for k in syntax.kinds}
    i, n = 0, len(tags)
    while i < n:
        start, end, closing, kind = tags[i]
        if closing:
            stray.append((start, end))
            i += 1
            continue
        positions = closes[kind]
        j = bisect.bisect_left(positions, end)
        if j < len(positions):
            close_at = positions[j]
            close_end = close_at + len(kind) + 3
            out.append(Block(kind, start, close_end, end, close_at, True))
            while i < n and tags[i][0] < close_end:
                i += 1
            continue
        # Never closed: ends at the next opening tag of another kind, or at the end of the text.
        i += 1
        while i < n and (tags[i][2] or tags[i][3] == kind):
            i += 1
        stop = tags[i][0] if i < n else len(text)
        out.append(Block(kind, start, stop, end, stop, False))
    return out, stray


def blocks(text: str, syntax: BlockSyntax = TOOLRL_BLOCKS) -> list[Block]:
    """The blocks of ``text`` in order: ToolRL's ``<think>`` / ``<tool_call>`` / ``<response>``,
    or the kinds of another format's ``syntax``.

    Tolerant of malformed text, following the rules in the module docstring; never raises.
    """
    return _scan_tags(text, syntax)[0]


def call_ranges(text: str) -> list[tuple[int, int]]:
    """Where ``text``'s tool calls are: the inside of every ``<tool_call>`` block; without one,
    the whole text when it has no ``<think>`` / ``<response>`` and starts like a call (``{``,
    ``[`` or ``name(``, after an optional code fence); else nothing (prose)."""
    ranges = [(b.inner_start, b.inner_end) for b in blocks(text) if b.kind == "tool_call"]
    if not ranges and "<think>" not in text and "<response>" not in text:
        start = starts_like_call(text)
        if start is not None:
            ranges = [(start, len(text))]
    return ranges


# --------------------------------------------------------------------------------------------
# tag
# --------------------------------------------------------------------------------------------


def call_spans(s: str, a: int, b: int, out: list[Span]) -> None:
    """Append the TOOL_NAME / PARAM_NAME / PARAM_VALUE spans of the calls in ``s[a:b]``."""
    for call in scan_calls(s, a, b):
        if call.name is not None:
            out.append(Span(call.name[0], call.name[1], Region.TOOL_NAME))
        for key, value in call.params:
            if key is not None:
                out.append(Span(key[0], key[1], Region.PARAM_NAME))
            if value is not None and value.end > value.start:
                out.append(Span(value.start, value.end, Region.PARAM_VALUE))


def tag(text: str, syntax: BlockSyntax = TOOLRL_BLOCKS) -> list[Span]:
    """Partition ``text`` into region spans (ToolRL's format, or another format's ``syntax``).

    Returns spans sorted by position, non-overlapping, non-empty, adjacent spans of equal region
    merged, together covering every character exactly once (OTHER where nothing else applies).
    Malformed text follows the rules in the module docstring; never raises.
    """
    blks, stray = _scan_tags(text, syntax)
    marks: list[Span] = [Span(a, b, Region.FORMAT) for a, b in stray]
    inner = dict(zip(syntax.kinds, syntax.inner))
    last = 0
    for blk in blks:
        if syntax.outside is not Region.OTHER:
            _outside(text, last, blk.start, syntax.outside, marks)
        last = blk.end
        marks.append(Span(blk.start, blk.inner_start, Region.FORMAT))
        if blk.kind in syntax.call_kinds:
            call_spans(text, blk.inner_start, blk.inner_end, marks)
        elif inner[blk.kind] is not Region.OTHER:
            marks.append(Span(blk.inner_start, blk.inner_end, inner[blk.kind]))
        if blk.closed:
            marks.append(Span(blk.inner_end, blk.end, Region.FORMAT))
    if syntax.outside is not Region.OTHER:
        _outside(text, last, len(text), syntax.outside, marks)
    return partition(text, marks)


def _outside(text: str, a: int, b: int, region: Region, marks: list[Span]) -> None:
    """Mark ``text[a:b]`` (between blocks) as ``region`` around the stray tags already marked, its
    leading and trailing whitespace left OTHER."""
    inside = [m for m in marks if a <= m.start < b]
    pos = a
    for m in sorted(inside) + [Span(b, b, Region.OTHER)]:
        seg = text[pos : m.start]
        if seg.strip():
            lead = len(seg) - len(seg.lstrip())
            marks.append(Span(pos + lead, pos + len(seg.rstrip()), region))
        pos = max(pos, m.end)


def partition(text: str, marks: Sequence[Span]) -> list[Span]:
    """Non-overlapping ``marks`` completed into a partition of ``text``: sorted, gaps OTHER,
    adjacent spans of one region merged (what :func:`tag` returns)."""
    spans: list[Span] = []
    pos = 0
    for start, end, region in sorted(marks):
        if start > pos:
            _append(spans, pos, start, Region.OTHER)
        _append(spans, max(start, pos), end, region)
        pos = max(pos, end)
    if pos < len(text):
        _append(spans, pos, len(text), Region.OTHER)
    return spans


def _append(spans: list[Span], start: int, end: int, region: Region) -> None:
    if end <= start:
        return
    if spans and spans[-1].region is region and spans[-1].end == start:
        spans[-1] = Span(spans[-1].start, end, region)
    else:
        spans.append(Span(start, end, region))


# --------------------------------------------------------------------------------------------
# token_regions
# --------------------------------------------------------------------------------------------


def token_regions(
    text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[Span] | None = None
) -> list[Region]:
    """The region of each token, given its character offsets ``(start, end)`` into ``text``.

    A token takes the highest-priority region among the characters it covers, in the order
    TOOL_NAME, PARAM_NAME, PARAM_VALUE, FORMAT, THINK, RESPONSE, OTHER, so every character of a
    name or value lies in a token of that region. A token with empty offsets (``end <= start``,
    special tokens such as EOS) is FORMAT; one whose offsets lie past the end of the text is OTHER.
    ``spans`` defaults to ``tag(text)``.
    """
    if spans is None:
        spans = tag(text)
    # One byte per character holding the rank of its region: a token is then min() over a slice,
    # which runs in C.
    ranks = bytearray(_RANK_BYTE[Region.OTHER] * len(text))
    for start, end, region in spans:
        ranks[start:end] = _RANK_BYTE[region] * (end - start)
    fmt, other = Region.FORMAT, Region.OTHER
    out: list[Region] = []
    append = out.append
    for start, end in offsets:
        if end <= start:
            append(fmt)
            continue
        seg = ranks[start:end]
        append(PRIORITY[min(seg)] if seg else other)
    return out
