"""ToolRL's format and correctness rewards, with the dynamic ("scheduled") ranges ResT trains with.

A reward compares a completion's text with the sample's structured target
``{"think": str, "calls": [{"name": str, "arguments": dict}], "response": str | None}`` (what
``restlit prepare`` writes)::

    total = format + correctness        (given to the last token of the completion)

See docs/method.md, "Reward". Parsing uses :mod:`restlit.regions` and :mod:`restlit.toolcalls`; this module
needs no torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from restlit.formats import Format, get_format
from restlit.formats.toolrl import CANONICAL_LAYOUTS, format_ok, predicted_calls

__all__ = ["CANONICAL_LAYOUTS", "Ramp", "Reward", "RewardBounds", "RewardConfig", "compute_reward",
           "correctness_reward", "format_ok", "format_reward", "load_reward_function", "multiset_jaccard",
           "predicted_calls",
           "reward_bounds", "tool_call_score"]

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
    function: str | None = None
    """A user's reward ``package.module:callable`` that ``fit`` uses in place of this one, called as
    ``fn(completion, item, step) -> Reward`` like ``fit(reward_fn=...)``."""

    def __post_init__(self) -> None:
        if self.function is not None:
            load_reward_function(self.function)
        if self.mode not in ("fixed", "scheduled"):
            raise ValueError(f"reward mode must be 'fixed' or 'scheduled', got {self.mode!r}")
        for name in ("format_range", "correctness_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min {lo} > max {hi}")


def load_reward_function(spec: str) -> Any:
    """The callable ``package.module:callable`` names; a ValueError (one line) when the module does
    not import or the attribute is missing or not callable."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function: {spec!r} is not 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix, in one line
        raise ValueError(f"function: {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"function: {spec!r}: {module_name} has no callable {attr!r}")  # noqa: TRY004
    return fn


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


def format_reward(completion: str, target: Mapping[str, Any], lo: float = 0.0, hi: float = 1.0,
                  fmt: Format | str | None = None) -> float:
    """``hi`` if the output format ``fmt`` (default ToolRL's) finds ``completion`` well-formed for
    the target's case (:meth:`restlit.formats.Format.format_ok`), else ``lo``."""
    return hi if get_format(fmt).format_ok(completion, target) else lo


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


def correctness_reward(completion: str, target: Mapping[str, Any], lo: float = -3.0, hi: float = 3.0,
                       fmt: Format | str | None = None) -> float:
    """ToolRL's tool-call correctness in ``[lo, hi]``, the calls read by the output format ``fmt``
    (default ToolRL's, :func:`predicted_calls`; see :meth:`restlit.formats.Format.predicted_calls`).

    0 if the target has no call; ``lo`` if the format finds no call (ToolRL's: the tags missing or a malformed line);
    ``hi`` on an exact match of the call list (names and arguments, in order); else
    ``(hi - lo) * score / S_max + lo`` with :func:`tool_call_score`.
    """
    gt = [{"name": c["name"], "arguments": dict(c["arguments"])} for c in target.get("calls") or ()]
    if not gt:
        return 0.0
    pred = get_format(fmt).predicted_calls(completion)
    if pred is None:
        return lo
    if pred == gt:
        return hi
    score, s_max = tool_call_score(gt, pred)
    return (hi - lo) * score / s_max + lo


def compute_reward(
    completion: str, target: Mapping[str, Any], step: int = 0, config: RewardConfig = RewardConfig(),
    fmt: Format | str | None = None,
) -> Reward:
    """``format + correctness`` for one completion at global step ``step`` (see :func:`reward_bounds`),
    in the output format ``fmt`` (default ToolRL's)."""
    b = reward_bounds(step, config)
    form = format_reward(completion, target, b.format_min, b.format_max, fmt)
    cor = correctness_reward(completion, target, b.correctness_min, b.correctness_max, fmt)
    return Reward(form, cor, form + cor, b)
