"""BFCL's multi-turn categories, executed: the entries and their ground truth from the ``bfcl-eval``
package, BFCL's own environment classes (imported from the installed package at run time), and
BFCL's multi-turn checker re-stated over decoded calls.

Protocol (BFCL's ``multi_turn_checker``), per entry:

* fresh instances of the entry's ``involved_classes``, each loaded from a deep copy of
  ``initial_config`` (``long_context=True`` for ``multi_turn_long_context``); a second, separate
  set runs the ground truth. Nothing is cached between entries or runs.
* the model's steps of each turn are decoded (:func:`decode_step`: keyword arguments, JSON lines,
  a JSON list or Python-call syntax), steps without a call or that do not decode are skipped, and
  the calls are executed in order; each result is the method's return value as BFCL renders it
  (a string as is, a dict as JSON, anything else ``str``; an exception
  ``Error during execution: ...``).
* after each turn whose ground truth has calls: the turn fails with ``no call`` when the model made
  none in it; with ``state mismatch: Class.attr ...`` when any public attribute of any instance
  differs from the ground truth's; with ``missing result ...`` when a result of the turn's ground
  truth is not among the model's results of this and all earlier turns (a multiset). An entry
  passes when every turn passes; a run cut short (``context_overflow``, ``step limit``) fails.

The ground truth is BFCL's call strings (``cd(folder='document')``, some with positional
arguments, ``sort('final_report.pdf')``); they are bound to parameter names with the method's
signature, so every call here is ``(name, keyword arguments)``.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restlit.evaluation.bfcl import INSTALL_HINT, BFCLUnavailable, data_dir
from restlit.formats import Format, get_format

__all__ = [
    "CATEGORIES",
    "FORBIDDEN",
    "STEP_LIMIT",
    "Call",
    "ContextOverflow",
    "Entry",
    "Environment",
    "decode_step",
    "initial_messages",
    "load_category",
    "reference_turns",
    "rollout",
    "score_trajectory",
    "turn_message",
]

CATEGORIES: tuple[str, ...] = (
    "multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context",
)
# BFCL's constants (bfcl_eval.constants): steps per turn, the held-out-function message, the
# class -> module table; restated so that a missing constant module cannot break loading
STEP_LIMIT = 20
MISSED_FUNCTION_PROMPT = "I have updated some more functions you can choose from. What about now?"
_BACKEND = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_MODULES = {
    "GorillaFileSystem": "gorilla_file_system", "MathAPI": "math_api", "MessageAPI": "message_api",
    "TwitterAPI": "posting_api", "TicketAPI": "ticket_api", "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking", "VehicleControlAPI": "vehicle_control",
}
_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json", "MathAPI": "math_api.json", "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json", "TicketAPI": "ticket_api.json", "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json", "VehicleControlAPI": "vehicle_control.json",
}
_STATELESS = frozenset({"MathAPI"})
# BFCL refuses to evaluate calls of these names
FORBIDDEN = frozenset({"kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run"})


@dataclass(frozen=True)
class Call:
    """One decoded call: a method name and its keyword arguments."""

    name: str
    arguments: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class Entry:
    """One multi-turn entry.

    ``turns``: the user messages of each turn (empty for a ``miss_func`` turn that only announces
    functions); ``functions``: BFCL's function docs listed from the start; ``missed``: turn index
    -> the docs added at that turn; ``ground_truth``: the calls of each turn (empty: the model
    cannot act, nothing is checked after it).
    """

    id: str
    category: str
    turns: list[list[dict[str, str]]]
    functions: list[dict[str, Any]]
    missed: dict[int, list[dict[str, Any]]]
    initial_config: dict[str, Any]
    involved_classes: list[str]
    ground_truth: list[list[Call]] = field(default_factory=list)

    @property
    def long_context(self) -> bool:
        return "long_context" in self.category


def _class(name: str) -> type:
    if name not in _MODULES:
        raise BFCLUnavailable(f"unknown BFCL environment class {name!r}")
    try:
        module = importlib.import_module(f"{_BACKEND}.{_MODULES[name]}")
    except ImportError as exc:
        raise BFCLUnavailable(f"cannot import BFCL's {name} ({exc}); install with: {INSTALL_HINT} mpmath") from None
    return getattr(module, name)


class Environment:
    """Fresh instances of an entry's classes, loaded from (a deep copy of) its initial config."""

    def __init__(self, entry: Entry):
        self.instances: dict[str, Any] = {}
        self._methods: dict[str, Any] = {}
        for name in entry.involved_classes:
            instance = _class(name)()
            if name not in _STATELESS:
                instance._load_scenario(copy.deepcopy(entry.initial_config.get(name, {})),
                                        long_context=entry.long_context)
            self.instances[name] = instance
            for method, bound in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not method.startswith("_"):
                    self._methods[method] = bound

    def method(self, name: str) -> Any:
        return self._methods.get(name)

    def execute(self, call: Call) -> str:
        """Run one call; its result as BFCL renders it (errors included, never raises)."""
        if call.name in FORBIDDEN:
            return f"Error during execution: Function call {call.name} is not allowed."
        method = self._methods.get(call.name)
        if method is None:
            return f"Error during execution: name '{call.name}' is not defined"
        try:
            result = method(**call.arguments)
        except Exception as exc:  # noqa: BLE001 - BFCL turns every exception into a result
            return f"Error during execution: {exc}"
        if isinstance(result, str):
            return result
        if isinstance(result, dict):
            try:
                return json.dumps(result)
            except (TypeError, ValueError):
                return str(result)
        return str(result)

    def state_difference(self, other: Environment) -> str | None:
        """The first public attribute (``Class.attr``) whose value differs from ``other``'s
        (the ground truth), with both values; None when every attribute is equal."""
        for name, expected in other.instances.items():
            model = self.instances[name]
            for attr, value in vars(expected).items():
                if attr.startswith("_"):
                    continue
                got = getattr(model, attr, None)
                if got != value:
                    return f"state mismatch: {name}.{attr} (model: {_short(got)}; expected: {_short(value)})"
        return None


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _gt_call(text: str, env: Environment) -> Call:
    """A ground-truth call string as ``(name, keyword arguments)``; positional arguments are
    bound to their parameter names by the method's signature."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise BFCLUnavailable(f"unexpected ground-truth call {text!r}")
    name = node.func.id
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    if args:
        method = env.method(name)
        if method is None:
            raise BFCLUnavailable(f"ground-truth call {text!r} names no method of the entry's classes")
        kwargs = dict(inspect.signature(method).bind(*args, **kwargs).arguments)
    return Call(name, kwargs)


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        raise BFCLUnavailable(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_DOC_CACHE: dict[str, list[dict]] = {}


def _docs(class_name: str) -> list[dict]:
    # the docs are read-only data: cached, handed out as deep copies
    if class_name not in _DOC_CACHE:
        _DOC_CACHE[class_name] = _read_lines(data_dir() / "multi_turn_func_doc" / _DOCS[class_name])
    return copy.deepcopy(_DOC_CACHE[class_name])


def load_category(category: str, limit: int | None = None) -> list[Entry]:
    """The entries of one multi-turn category in file order (the first ``limit``), with their
    function docs (held-out ones moved to their turn, as BFCL does) and ground truth."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL multi-turn category {category!r}; expected one of {', '.join(CATEGORIES)}")
    root = data_dir()
    rows = _read_lines(root / f"BFCL_v4_{category}.json")
    if limit is not None:
        rows = rows[:limit]
    answers = {a["id"]: a["ground_truth"] for a in _read_lines(root / "possible_answer" / f"BFCL_v4_{category}.json")}
    entries = []
    for row in rows:
        if row["id"] not in answers:
            raise BFCLUnavailable(f"{category}: entry {row['id']} has no ground truth in the package data")
        functions = [doc for name in row["involved_classes"] for doc in _docs(name)]
        missed: dict[int, list[dict]] = {}
        for turn, names in (row.get("missed_function") or {}).items():
            missed[int(turn)] = [f for f in functions if f["name"] in names]
            functions = [f for f in functions if f["name"] not in names]
        entry = Entry(row["id"], category, row["question"], functions, missed, row.get("initial_config") or {},
                      list(row["involved_classes"]))
        env = Environment(entry)  # only for the signatures of positional ground-truth calls
        entry.ground_truth = [[_gt_call(c, env) for c in turn] for turn in answers[row["id"]]]
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------
# Prompts


def _tools(docs: Sequence[Mapping[str, Any]]) -> list[dict]:
    from restlit.data_prep.schema import normalize_tools

    tools, _warnings = normalize_tools([{k: d[k] for k in ("name", "description", "parameters")} for d in docs])
    return tools


def initial_messages(entry: Entry, fmt: Format | str | None = None) -> list[dict[str, Any]]:
    """The system message: the entry's functions (held-out ones excluded), rendered by the output
    format ``fmt`` (:meth:`restlit.formats.Format.messages`) as training prompts are."""
    return get_format(fmt).messages(_tools(entry.functions), [])


def turn_message(entry: Entry, turn: int) -> list[dict[str, str]]:
    """The user messages that open ``turn``. A ``miss_func`` turn that adds functions gets BFCL's
    prompting-mode message: the new tools (one JSON line each, as the system prompt lists them),
    then "I have updated some more functions you can choose from. What about now?"."""
    from restlit.prompts import render_tools

    if turn in entry.missed:
        return [{"role": "user", "content": f"{render_tools(_tools(entry.missed[turn]))}\n{MISSED_FUNCTION_PROMPT}"}]
    return [{"role": m["role"], "content": m["content"]} for m in entry.turns[turn]]


# ---------------------------------------------------------------------------------------------
# Decoding and scoring


def decode_step(text: str, fmt: Format | str | None = None) -> tuple[list[Call], str | None]:
    """The calls of one model step (in the output format ``fmt``), or ``([], reason)`` when it does
    not decode: BFCL drops a step it cannot decode as a whole, so one malformed call drops the
    step's other calls too."""
    calls, errors = get_format(fmt).read_calls(text)
    if errors:
        return [], errors[0]
    return [Call(c["name"], c["arguments"]) for c in calls], None


def _missing(expected: Sequence[str], got: Sequence[str]) -> list[str]:
    pool = list(got)
    missing = []
    for item in expected:
        try:
            pool.remove(item)
        except ValueError:
            missing.append(item)
    return missing


def _turn_verdict(model_env: Environment, gt_env: Environment, made_call: bool, gt_results: list[str],
                  all_results: list[str], turn: int) -> tuple[str, int] | None:
    """BFCL's three checks after a turn whose ground truth has calls; None when it passes."""
    if not made_call:
        return "no call", turn
    diff = model_env.state_difference(gt_env)
    if diff is not None:
        return diff, turn
    missing = _missing(gt_results, all_results)
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"missing result {_short(missing[0])}{more}", turn
    return None


def score_trajectory(entry: Entry, turns: Sequence[Sequence[str]], stop: str | None = None,
                     fmt: Format | str | None = None) -> dict[str, Any]:
    """Execute and score one entry's model outputs: ``turns[t]`` are the raw texts of turn ``t``'s
    steps; ``stop`` the reason a generation was cut short (``context_overflow``, ``step limit``);
    ``fmt`` the output format the steps are decoded in.

    Returns ``{"passed", "reason", "failed_turn", "trajectory"}``; ``trajectory`` has, per turn,
    the steps (``text``, decoded ``calls`` with their ``results``, or the decode ``error``) and the
    ground truth's calls and results.
    """
    model_env, gt_env = Environment(entry), Environment(entry)
    all_results: list[str] = []
    trajectory: list[dict[str, Any]] = []
    verdict: tuple[str, int] | None = None
    for t, gt_calls in enumerate(entry.ground_truth):
        if t >= len(turns):
            verdict = verdict or (stop or f"no output for turn {t} ({len(turns)} of {len(entry.ground_truth)} turns)", t)
            break
        steps, made_call, call_steps = [], False, 0
        for text in turns[t]:
            calls, error = decode_step(text, fmt)
            step: dict[str, Any] = {"text": text}
            if error:
                step["error"] = error
            elif calls:
                made_call, call_steps = True, call_steps + 1
                results = [model_env.execute(c) for c in calls]
                all_results.extend(results)
                step["calls"] = [{**c.as_dict(), "result": r} for c, r in zip(calls, results)]
            steps.append(step)
        gt_results = [gt_env.execute(c) for c in gt_calls]
        trajectory.append({"steps": steps, "ground_truth": [{**c.as_dict(), "result": r}
                                                            for c, r in zip(gt_calls, gt_results)]})
        if verdict is not None:
            continue
        if call_steps > STEP_LIMIT:
            verdict = ("step limit", t)
        elif stop and t == len(turns) - 1:  # the turn the generation was cut in
            verdict = (stop, t)
        elif gt_calls:
            verdict = _turn_verdict(model_env, gt_env, made_call, gt_results, all_results, t)
    if verdict is None and len(turns) > len(entry.ground_truth):
        verdict = (f"{len(turns)} turns of output for {len(entry.ground_truth)} turns", len(entry.ground_truth))
    if verdict is None:
        return {"passed": True, "reason": "every turn matches the ground truth", "failed_turn": None,
                "trajectory": trajectory}
    return {"passed": False, "reason": verdict[0], "failed_turn": verdict[1], "trajectory": trajectory}


def reference_turns(entry: Entry, fmt: Format | str | None = None) -> list[list[str]]:
    """The ground truth as model output in the output format ``fmt``: one step per turn with all
    the turn's calls, then a step with no call; a turn without calls gets a response."""
    from restlit.prompts import NO_CALL_RESPONSE

    render = get_format(fmt).render
    done = render("", [], "Done.")
    return [[render("", [c.as_dict() for c in calls], None), done] if calls
            else [render("", [], NO_CALL_RESPONSE)] for calls in entry.ground_truth]


# ---------------------------------------------------------------------------------------------
# The inference loop


class ContextOverflow(Exception):
    """Raised by a generator whose prompt no longer fits the model's context."""


def entry_steps(entry: Entry, *, step_limit: int = STEP_LIMIT, fmt: Format | str | None = None,
                ) -> Generator[list[dict[str, str]], str | None, dict[str, Any]]:
    """BFCL's inference on one entry, as a generator: it yields the conversation the model answers
    next and is sent the model's text (None: the conversation no longer fits the model's context).

    Per turn: the turn's user message; then steps: the model answers, its calls are decoded and
    executed in order on this entry's own fresh instances, and each result is appended as a
    ``tool`` message; the turn ends at the first step with no call (or that does not decode). A
    turn whose model is still calling after ``step_limit`` steps ends the entry (``step limit``),
    as an overflowing prompt does (``context_overflow``). Returns ``{"turns": [[step text, ...],
    ...], "stop": None | reason}``, which :func:`score_trajectory` scores. ``fmt``: the output
    format prompted and decoded in.
    """
    env = Environment(entry)
    messages = initial_messages(entry, fmt)
    turns: list[list[str]] = []
    for t in range(len(entry.turns)):
        messages.extend(turn_message(entry, t))
        steps: list[str] = []
        turns.append(steps)
        count = 0
        while True:
            text = yield messages
            if text is None:
                return {"turns": turns, "stop": "context_overflow"}
            steps.append(text)
            messages.append({"role": "assistant", "content": text})
            calls, _error = decode_step(text, fmt)
            if not calls:
                break
            messages.extend({"role": "tool", "content": env.execute(c)} for c in calls)
            count += 1
            if count > step_limit:
                return {"turns": turns, "stop": "step limit"}
    return {"turns": turns, "stop": None}


def drive(runs: Sequence[Generator], serve: Any, *, width: int = 1,
          done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Run several entries' :func:`entry_steps` together, ``width`` at a time, and return their
    results in order. ``serve(width, feed)`` is a generator's
    :meth:`restlit.evaluation.session.PrefixCacheGenerator.serve`: slot ``k`` (``0 <= k <
    width``) holds one entry at a time, ``feed(k, answer)`` sends the answer of its step to the
    entry and returns the entry's next step, and an entry that ends hands its slot to the next
    one. ``done(index)`` is called as each entry ends."""
    results: list[dict[str, Any]] = [{}] * len(runs)
    waiting = iter(enumerate(runs))
    running: dict[int, tuple[int, Generator]] = {}

    def finish(index: int, value: dict[str, Any]) -> None:
        results[index] = value
        if done is not None:
            done(index)

    def feed(slot: int, answer: Any) -> Any:
        if slot in running:
            index, run = running.pop(slot)
            try:
                messages = run.send(None if isinstance(answer, ContextOverflow) else answer)
                running[slot] = (index, run)
                return messages
            except StopIteration as stop:
                finish(index, stop.value)
        for index, run in waiting:
            try:
                messages = next(run)
                running[slot] = (index, run)
                return messages
            except StopIteration as stop:  # an entry without turns
                finish(index, stop.value)
        return None

    serve(width, feed)
    return results


def rollout(entry: Entry, generate: Any, *, step_limit: int = STEP_LIMIT) -> dict[str, Any]:
    """:func:`entry_steps` on one entry, each step answered by ``generate(messages) -> text`` (it
    may raise :class:`ContextOverflow`)."""

    def one(width: int, feed: Any) -> None:
        messages = feed(0, None)
        while messages is not None:
            try:
                answer = generate(messages)
            except ContextOverflow as overflow:
                answer = overflow
            messages = feed(0, answer)

    return drive([entry_steps(entry, step_limit=step_limit)], one)[0]
