"""ToolRL's format and correctness rewards, with the dynamic ("scheduled") ranges ResT trains with.

A reward compares a completion's text with the sample's structured target
``{"think": str, "calls": [{"name": str, "arguments": dict}], "response": str | None}`` (what
``restlit prepare`` writes)::

    total = format + correctness        (given to the last token of the completion)

See docs/method.md, "Reward". Parsing uses :mod:`restlit.regions` and :mod:`restlit.toolcalls`; this module
needs no torch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from restlit.regions import blocks
from restlit.toolcalls import parse_tool_calls

RewardMode = Literal["fixed", "scheduled"]


@dataclass(frozen=True)
class Ramp:
    """A bound that moves linearly from ``start`` at step 0 to ``end`` at step ``steps`` and stays there:
    ``value(s) = start + (end - start) * min(s / steps, 1)``."""

    start: float
    """The bound's value at step 0."""
    end: float
    """The bound's value from step steps on."""
    steps: float
    """Steps over which the bound moves from start to end (> 0)."""

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")

    def __call__(self, step: float) -> float:
        return self.start + (self.end - self.start) * min(max(step, 0) / self.steps, 1.0)


@dataclass(frozen=True)
class RewardConfig:
    """Reward ranges. ``fixed`` uses ``format_range`` and ``correctness_range`` at every step (ToolRL's
    ``[0, 1]`` and ``[-3, 3]``). ``scheduled`` (the default, as ResT trains) takes each bound from its
    :class:`Ramp` at the global step ``s``; the defaults are ToolRL's ``SCHEDULEREWARD``::

        format max       max(1, 2 - s/150)      Ramp(2, 1, 150)
        format min       min(-1, -2 + s/75)     Ramp(-2, -1, 75)
        correctness max  min(3, 2 + s/150)      Ramp(2, 3, 150)
        correctness min  max(-3, -2 - s/150)    Ramp(-2, -3, 150)
    """

    mode: RewardMode = "scheduled"
    """scheduled (ranges move with the step, as ResT trains) or fixed (format_range, correctness_range)."""
    format_range: tuple[float, float] = (0.0, 1.0)
    """fixed: [min, max] of the format reward."""
    correctness_range: tuple[float, float] = (-3.0, 3.0)
    """fixed: [min, max] of the correctness reward."""
    format_max: Ramp = field(default_factory=lambda: Ramp(2.0, 1.0, 150))
    """scheduled: the format reward's upper bound over steps."""
    format_min: Ramp = field(default_factory=lambda: Ramp(-2.0, -1.0, 75))
    """scheduled: the format reward's lower bound over steps."""
    correctness_max: Ramp = field(default_factory=lambda: Ramp(2.0, 3.0, 150))
    """scheduled: the correctness reward's upper bound over steps."""
    correctness_min: Ramp = field(default_factory=lambda: Ramp(-2.0, -3.0, 150))
    """scheduled: the correctness reward's lower bound over steps."""

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "scheduled"):
            raise ValueError(f"reward mode must be 'fixed' or 'scheduled', got {self.mode!r}")
        for name in ("format_range", "correctness_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min {lo} > max {hi}")


@dataclass(frozen=True)
class RewardBounds:
    """The ``[min, max]`` of each component at one step."""

    format_min: float
    """Lowest format reward at this step."""
    format_max: float
    """Highest format reward at this step."""
    correctness_min: float
    """Lowest correctness reward at this step."""
    correctness_max: float
    """Highest correctness reward at this step."""


@dataclass(frozen=True)
class Reward:
    """One completion's reward: its components, their sum, and the bounds they were scored in."""

    format: float
    """The format component, in [format_min, format_max]."""
    correctness: float
    """The correctness component, in [correctness_min, correctness_max]."""
    total: float
    """format + correctness: the completion's reward."""
    bounds: RewardBounds
    """The ranges the components were scored in."""


def reward_bounds(step: int, config: RewardConfig = RewardConfig()) -> RewardBounds:
    """The component ranges at global step ``step``: fixed, or each :class:`Ramp` of ``config`` at ``step``."""
    if config.mode == "fixed":
        return RewardBounds(*config.format_range, *config.correctness_range)
    return RewardBounds(config.format_min(step), config.format_max(step),
                        config.correctness_min(step), config.correctness_max(step))


def _expected_kinds(target: Mapping[str, Any]) -> tuple[str, ...]:
    return ("think",) + (("tool_call",) if target.get("calls") else ()) + (
        ("response",) if target.get("response") is not None else ()
    )


# The layouts of a canonical output when no reference says which one is expected.
CANONICAL_LAYOUTS = (("think", "tool_call"), ("think", "response"), ("think", "tool_call", "response"))


def format_ok(completion: str, target: Mapping[str, Any] | None = None) -> bool:
    """True when ``completion`` has exactly the blocks the target's case needs, closed, each once, in order:
    ``think + tool_call``, ``think + response`` or ``think + tool_call + response`` (``think`` alone when the
    target has neither), and nothing but whitespace outside them (no stray tag or text, as ToolRL's
    ``^<think>...</think>\\n<tool_call>...</tool_call>$`` patterns require).

    Without a target (evaluation: is the output canonical, whatever the reference?) any of the three
    layouts :data:`CANONICAL_LAYOUTS` is accepted, and every line of a ``<tool_call>`` block must be one
    canonical JSON call (:func:`predicted_calls`).

    Blocks are :func:`restlit.regions.blocks`, so a tag named inside a block's text ("I put the call in the
    <tool_call> tags") is text, not a tag. ToolRL counts raw tag strings instead, which fails 17 of the 400
    references in its own ``rlla_sft.json``.
    """
    found = blocks(completion)
    kinds = tuple(b.kind for b in found)
    layouts = CANONICAL_LAYOUTS if target is None else (_expected_kinds(target),)
    if kinds not in layouts or not all(b.closed for b in found):
        return False
    outside, last = [], 0
    for b in found:
        outside.append(completion[last : b.start])
        last = b.end
    outside.append(completion[last:])
    if any(part.strip() for part in outside):
        return False
    return target is not None or "tool_call" not in kinds or predicted_calls(completion) is not None


def format_reward(completion: str, target: Mapping[str, Any], lo: float = 0.0, hi: float = 1.0) -> float:
    """``hi`` if :func:`format_ok`, else ``lo``."""
    return hi if format_ok(completion, target) else lo


def multiset_jaccard(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """ToolRL's ``match_score``: 1 if ``a == b``; 0 if either is empty; else ``|a & b| / |a | b|`` on
    multisets, i.e. ``sum_k min(a_k, b_k) / (len a + len b - sum_k min(a_k, b_k))``."""
    if list(a) == list(b):
        return 1.0
    if not a or not b:
        return 0.0
    common = sum((Counter(a) & Counter(b)).values())
    return common / (len(a) + len(b) - common)


def tool_call_score(gt: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """ToolRL's partial-credit score of predicted calls against ground-truth calls, and its maximum.

    ``score = J(gt names, pred names) + sum_{g in gt} best_p [J(keys g, keys p) + #{k in g : p[k] == g[k]}]``
    where ``p`` ranges over unused predicted calls with ``g``'s name and a call is used once it is the best
    (strictly positive) match; ``S_max = 1 + sum_{g in gt} (1 + #params g)``. Calls are
    ``{"name": str, "arguments": dict}``; values compare with Python ``==`` as in ToolRL.
    """
    score = multiset_jaccard([c["name"] for c in gt], [c["name"] for c in pred])
    s_max = 1.0
    used: set[int] = set()
    for g in gt:
        g_args = g["arguments"]
        s_max += 1.0 + len(g_args)
        best, best_index = 0.0, -1
        for i, p in enumerate(pred):
            if i in used or p["name"] != g["name"]:
                continue
            p_args = p["arguments"]
            s = multiset_jaccard(list(g_args), list(p_args))
            s += sum(1.0 for k, v in g_args.items() if k in p_args and p_args[k] == v)
            if s > best:
                best, best_index = s, i
        if best_index >= 0:
            used.add(best_index)
            score += best
    return score, s_max


def predicted_calls(completion: str) -> list[dict] | None:
    """The completion's calls as ``{"name", "arguments"}`` dicts, or None when ToolRL would give the minimum:
    no closed ``<tool_call>`` block, or a non-blank line inside one that is not exactly one JSON object with a
    string ``"name"`` and a ``"parameters"`` object (the canonical JSON-lines format; the tolerant forms
    :func:`restlit.toolcalls.parse_tool_calls` also reads, Python calls, JSON lists, single quotes, two calls on
    a line or one spread over lines, all count as malformed here)."""
    tool_blocks = [b for b in blocks(completion) if b.kind == "tool_call"]
    if not tool_blocks or not all(b.closed for b in tool_blocks):
        return None
    parsed = parse_tool_calls(completion)
    if parsed.errors or parsed.syntax != "json_lines":
        return None
    lines = [line.strip() for b in tool_blocks for line in completion[b.inner_start : b.inner_end].split("\n")]
    call_texts = [completion[c.start : c.end].strip() for c in parsed.calls]
    if [line for line in lines if line] != call_texts:
        return None
    for text in call_texts:
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("parameters"), dict):
            return None
    return [c.as_dict() for c in parsed.calls]


def correctness_reward(completion: str, target: Mapping[str, Any], lo: float = -3.0, hi: float = 3.0) -> float:
    """ToolRL's tool-call correctness in ``[lo, hi]``.

    0 if the target has no call; ``lo`` if :func:`predicted_calls` finds the tags missing or a malformed line;
    ``hi`` on an exact match of the call list (names and arguments, in order); else
    ``(hi - lo) * score / S_max + lo`` with :func:`tool_call_score`.
    """
    gt = [{"name": c["name"], "arguments": dict(c["arguments"])} for c in target.get("calls") or ()]
    if not gt:
        return 0.0
    pred = predicted_calls(completion)
    if pred is None:
        return lo
    if pred == gt:
        return hi
    score, s_max = tool_call_score(gt, pred)
    return (hi - lo) * score / s_max + lo


def compute_reward(
    completion: str, target: Mapping[str, Any], step: int = 0, config: RewardConfig = RewardConfig()
) -> Reward:
    """``format + correctness`` for one completion at global step ``step`` (see :func:`reward_bounds`)."""
    b = reward_bounds(step, config)
    fmt = format_reward(completion, target, b.format_min, b.format_max)
    cor = correctness_reward(completion, target, b.correctness_min, b.correctness_max)
    return Reward(fmt, cor, fmt + cor, b)
