"""``restlit eval`` as a library: suites, outputs (saved predictions or greedy generation),
per-item verdicts, summaries and ``eval.json``.

Suites are named ``heldout`` (the validation split of a prepared dataset), ``bfcl:<category>``
(BFCL's single-turn AST categories and its four executed multi-turn ones) and
``apibank:<level>``; :func:`parse_suites` expands ``bfcl:simple_python,multiple``,
``bfcl:multi_turn``, ``bfcl:all`` and ``apibank``. A single-turn item's output is one text; a
multi-turn entry's is ``{"turns": [[step text, ...], ...], "stop": None | reason}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restlit.errors import UserError
from restlit.evaluation import apibank, bfcl, heldout, multiturn
from restlit.stats import Interval, wilson_interval

__all__ = [
    "GROUPS",
    "EvalError",
    "Suite",
    "generate_outputs",
    "groups",
    "load_model",
    "load_predictions",
    "load_suite",
    "parse_suites",
    "rollout_outputs",
    "score",
    "write_report",
]

HELDOUT = "heldout"
MULTI_TURN = "multi_turn"
BFCL_ALL = (*bfcl.CATEGORIES, *multiturn.CATEGORIES)
# BFCL's leaderboard groups: (name, categories, how they are averaged); "overall" is the
# unweighted mean of the four groups (BFCL's own total also weighs in categories restlit has not)
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("non-live AST", ("simple_python", "multiple", "parallel", "parallel_multiple"), "mean"),
    ("live AST", ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"), "pooled"),
    ("multi-turn", multiturn.CATEGORIES, "mean"),
    ("irrelevance", ("irrelevance", "live_irrelevance"), "mean"),
)


class EvalError(UserError):
    """A user mistake (unknown suite, missing file, bad predictions line); one line."""


@dataclass
class Suite:
    """One scored category: its items' ids, how to prompt and how to score them.

    ``messages(i)`` are item ``i``'s chat messages (single-turn suites); ``steps(i)`` is entry
    ``i``'s inference loop (multi-turn suites, ``multi_turn`` True;
    :func:`restlit.evaluation.multiturn.entry_steps`); ``score(i, output)``
    returns the per-item record ``{"passed", "reason", ...}``; ``metrics()`` the suite's extra
    metrics over the items scored so far.
    """

    name: str
    ids: list[str]
    messages: Callable[[int], list[dict[str, str]]] | None
    score: Callable[[int, Any], dict[str, Any]]
    metrics: Callable[[], dict[str, Any]] = field(default=dict)
    steps: Callable[[int], Generator] | None = None

    @property
    def multi_turn(self) -> bool:
        return self.steps is not None


def _expand(part: str, family: str) -> tuple[list[str], str]:
    """The suite names of one ``--suite`` element, and the family (``bfcl`` / ``apibank``) that
    bare names after it in the same value belong to."""
    if part == HELDOUT:
        return [HELDOUT], family
    if part == "apibank":
        return [f"apibank:{lv}" for lv in apibank.LEVELS], "apibank"
    prefix, colon, name = part.partition(":")
    if not colon:
        prefix, name = family, part
    if prefix == "apibank" and name in apibank.LEVELS:
        return [f"apibank:{name}"], prefix
    if prefix == "bfcl":
        if name == "all" and colon:
            return [f"bfcl:{c}" for c in BFCL_ALL], prefix
        if name == MULTI_TURN:
            return [f"bfcl:{c}" for c in multiturn.CATEGORIES], prefix
        if name in BFCL_ALL:
            return [f"bfcl:{name}"], prefix
    raise EvalError(f"unknown suite {part!r}: expected heldout, bfcl:all, bfcl:multi_turn, bfcl:<category> "
                    f"with a category among {', '.join(BFCL_ALL)}, or apibank[:level-1,level-2,level-3]")


def parse_suites(specs: Sequence[str]) -> list[str]:
    """Expand ``--suite`` values into suite names, in order, without duplicates.

    Each value is a comma-separated list of ``heldout``, ``bfcl:<category>`` (the prefix may be
    left out after the first: ``bfcl:simple_python,multiple``), ``bfcl:multi_turn`` (the four
    multi-turn categories), ``bfcl:all`` (every category), ``apibank`` (the three levels) and
    ``apibank:level-1,level-2``. EvalError for an unknown name or an empty list.
    """
    out: list[str] = []
    for spec in specs:
        family = "bfcl"
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            names, family = _expand(part, family)
            out.extend(n for n in names if n not in out)
    if not out:
        raise EvalError("no suite given: use --suite heldout, bfcl:<category> and/or apibank")
    return out


def _bfcl_suite(category: str, limit: int | None) -> Suite:
    items = bfcl.load_category(category, limit)

    def score(i: int, output: str) -> dict[str, Any]:
        v = bfcl.score_output(items[i], output)
        return {"passed": v.passed, "reason": v.reason}

    return Suite(f"bfcl:{category}", [it.id for it in items], lambda i: bfcl.item_messages(items[i]), score)


def _multi_turn_suite(category: str, limit: int | None) -> Suite:
    entries = multiturn.load_category(category, limit)

    def score(i: int, output: Any) -> dict[str, Any]:
        if not isinstance(output, dict) or "turns" not in output:
            return {"passed": False, "reason": "expected the steps of each turn ('turns'), got one output text",
                    "failed_turn": None, "stop": None, "trajectory": []}
        result = multiturn.score_trajectory(entries[i], output["turns"], output.get("stop"))
        return {"passed": result["passed"], "reason": result["reason"], "failed_turn": result["failed_turn"],
                "stop": output.get("stop"), "trajectory": result["trajectory"]}

    return Suite(f"bfcl:{category}", [e.id for e in entries], None, score,
                 steps=lambda i: multiturn.entry_steps(entries[i]))


def _apibank_suite(level: str, limit: int | None, prompt: str) -> Suite:
    items = apibank.load_level(level, limit)

    def score(i: int, output: str) -> dict[str, Any]:
        v = apibank.score_output(items[i], output)
        return {"passed": v.passed, "reason": v.reason}

    return Suite(f"apibank:{level}", [it.id for it in items], lambda i: apibank.messages(items[i], prompt), score)


def _heldout_suite(data: str | Path | None, limit: int | None) -> Suite:
    if data is None:
        raise EvalError("the heldout suite needs --data DIR (a `restlit prepare` output)")
    try:
        samples = heldout.load_heldout(data, limit)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    # the scores of the items that had an output, for the suite metrics
    scores: dict[int, heldout.HeldoutScore] = {}

    def score(i: int, output: str) -> dict[str, Any]:
        s = heldout.score_output(samples[i].target, output)
        scores[i] = s
        return {"passed": s.verdict.passed, "reason": s.verdict.reason, "format_valid": s.format_valid,
                "names_ok": s.names_ok, "param_tp": s.param_tp, "param_pred": s.param_pred,
                "param_gold": s.param_gold}

    def metrics() -> dict[str, Any]:
        out = heldout.summarize([scores[i] for i in sorted(scores)])
        out.pop("items")
        return out

    return Suite(HELDOUT, [s.id for s in samples], lambda i: samples[i].messages(), score, metrics)


def load_suite(name: str, *, data: str | Path | None = None, limit: int | None = None,
               prompt: str = "native") -> Suite:
    """Load one suite by name (see :func:`parse_suites`), its first ``limit`` items; ``prompt``
    (``native`` or ``restlit``) is the system prompt of the API-Bank suites.

    EvalError for user mistakes: heldout without a usable ``data`` directory, bfcl-eval missing
    (the message gives the install command), an unknown prompt.
    """
    if name == HELDOUT:
        return _heldout_suite(data, limit)
    family, _, category = name.partition(":")
    if prompt not in apibank.PROMPTS:
        raise EvalError(f"unknown prompt {prompt!r}: expected one of {', '.join(apibank.PROMPTS)}")
    try:
        if family == "apibank":
            return _apibank_suite(category, limit, prompt)
        if category in multiturn.CATEGORIES:
            return _multi_turn_suite(category, limit)
        return _bfcl_suite(category, limit)
    except (bfcl.BFCLUnavailable, ValueError) as exc:
        raise EvalError(str(exc)) from None


def _steps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in value)


def load_predictions(path: str | Path) -> dict[str, Any]:
    """Saved outputs: a JSON-lines file of ``{"id": str, "output": str}`` (single-turn items) or
    ``{"id": str, "turns": [[step text, ...], ...]}`` (multi-turn entries: the raw outputs of each
    turn's steps); the last line wins for a repeated id. EvalError naming the file and line for
    anything else."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read: {exc}") from None
    out: dict[str, Any] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str)):
            raise EvalError(f"{path}:{n}: expected an object with string fields 'id' and 'output'")
        if "turns" in row:
            if not _steps(row["turns"]):
                raise EvalError(f"{path}:{n}: 'turns' must be a list of lists of strings (each turn's step outputs)")
            out[row["id"]] = {"turns": row["turns"], "stop": None}
        elif isinstance(row.get("output"), str):
            out[row["id"]] = row["output"]
        else:
            raise EvalError(f"{path}:{n}: expected an object with string fields 'id' and 'output'")
    return out


def load_model(model: str) -> tuple[Any, Any]:
    """``(tokenizer, policy)`` of a model directory or alias, on the GPU when there is one;
    EvalError when it cannot be found."""
    import torch
    from transformers.utils import logging as hf_logging

    from restlit.models import ModelNotFound, load_policy, load_tokenizer

    # transformers' own "Loading weights" bar would interleave with the caller's progress bar
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = load_tokenizer(model)
        policy = load_policy(model)
    except ModelNotFound as exc:
        raise EvalError(str(exc)) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return tokenizer, policy.to("cuda" if torch.cuda.is_available() else "cpu")


ENGINES = ("hf", "vllm")


def check_engine(kind: str) -> None:
    """EvalError unless ``kind`` is one of :data:`ENGINES` (checked before a model is loaded)."""
    if kind not in ENGINES:
        raise EvalError(f"--engine: {kind!r} is not one of {', '.join(ENGINES)}")


def eval_engine(kind: str, tokenizer: Any, policy: Any, *, batch_size: int, max_context: int | None = None) -> Any:
    """The rollout engine greedy evaluation generates with: ``hf`` (:class:`restlit.rollout.hf.HFEngine`,
    ``batch_size`` prompts decoded together) or ``vllm`` (:class:`restlit.rollout.vllm.VLLMEngine`
    with automatic prefix caching, ``max_model_len`` = ``max_context`` or the model's positions).
    EvalError for another name, or when vLLM is missing or cannot run this model."""
    check_engine(kind)
    if kind == "hf":
        from restlit.rollout.hf import HFEngine

        return HFEngine(policy, tokenizer, prompt_batch_size=batch_size)
    try:
        from restlit.rollout.vllm import VLLMEngine, VLLMUnsupported

        return VLLMEngine(policy, tokenizer, max_model_len=_positions(policy, max_context), enable_prefix_caching=True)
    except ImportError as exc:
        raise EvalError(str(exc)) from None
    except VLLMUnsupported as exc:
        raise EvalError(str(exc).replace("rollout.engine: vllm", "--engine vllm")) from None


def _positions(policy: Any, max_context: int | None) -> int:
    """The context the vLLM engine is built for: ``max_context``, else the model's positions;
    EvalError past the model's positions (vLLM refuses them)."""
    positions = getattr(policy.config, "max_position_embeddings", None) or 4096
    if max_context and max_context > positions:
        raise EvalError(f"--max-context {max_context} exceeds the model's {positions} positions, "
                        "which the vllm engine cannot go past")
    return max_context or positions


def _counter(progress: Callable[[int, int], None] | None, total: int) -> Callable[[int], None]:
    """``done(index)`` for a run of ``total`` items: calls ``progress(finished, total)``."""
    finished = 0

    def done(index: int) -> None:
        nonlocal finished
        finished += 1
        if progress is not None:
            progress(finished, total)

    return done


def generate_outputs(
    conversations: Sequence[list[dict[str, str]]],
    model: str | tuple[Any, Any],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    engine: str = "hf",
    progress: Callable[[int, int], None] | None = None,
    continuous: bool = True,
) -> list[str]:
    """Greedy completions of ``conversations`` (chat messages) by ``model`` (a directory, the
    alias ``smollm2-135m``, or a loaded ``(tokenizer, policy)``); the outputs come back in input
    order and ``progress(done, total)`` is called as they finish. EvalError when the model cannot
    be found.

    On ``hf`` with restlit's attention (what :func:`load_model` gives) ``batch_size``
    conversations decode together and a finished one's place goes to the next at once
    (:meth:`restlit.evaluation.session.PrefixCacheGenerator.answers`; on the demo's 64 items
    per model 24% less time than batches that wait for their longest output); a prompt with no
    room left in the model's context gets an empty output (a failed item). Otherwise (or with
    ``continuous=False``, the benchmark's baseline) the prompts go to :func:`eval_engine`'s
    engine ``batch_size`` at a time, shortest first (less padding).
    """
    from restlit.evaluation.multiturn import ContextOverflow
    from restlit.evaluation.session import PrefixCacheGenerator
    from restlit.rollout.base import SamplingConfig
    from restlit.tokens import prompt_ids

    tokenizer, policy = load_model(model) if isinstance(model, str) else model
    check_engine(engine)
    if engine == "hf" and continuous:
        rows = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=max_new_tokens, reuse=False, rows=batch_size)
        if rows.batched:
            with rows.packed():
                texts = rows.answers(conversations, done=_counter(progress, len(conversations)))
            return ["" if isinstance(t, ContextOverflow) else t for t in texts]
    generator = eval_engine(engine, tokenizer, policy, batch_size=batch_size)
    sampling = SamplingConfig(n=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    prompts = [prompt_ids(tokenizer, m) for m in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            groups = generator.generate([prompts[i] for i in chunk], sampling)
            for i, group in zip(chunk, groups):
                outputs[i] = group[0].text
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        generator.close()
    return outputs


@contextmanager
def multi_turn_generator(tokenizer: Any, policy: Any, *, engine: str = "hf", max_new_tokens: int = 512,
                         max_context: int | None = None, reuse: bool = True, batch_size: int = 1) -> Iterator[Any]:
    """The generator multi-turn entries are answered by, for the length of the block: on ``hf`` a
    :class:`restlit.evaluation.session.PrefixCacheGenerator` (``reuse``: keep each slot's KV
    cache; its weights packed for ``batch_size`` rows), on ``vllm`` an
    :class:`restlit.evaluation.session.EngineGenerator` over :func:`eval_engine`'s engine (vLLM's
    prefix cache does the reuse), closed after the block."""
    from restlit.evaluation.session import EngineGenerator, PrefixCacheGenerator

    if engine == "hf":
        generator = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=max_new_tokens, max_context=max_context,
                                         reuse=reuse, rows=batch_size)
        with generator.packed():
            yield generator
        return
    vllm = eval_engine(engine, tokenizer, policy, batch_size=batch_size, max_context=max_context)
    try:
        yield EngineGenerator(vllm, tokenizer, max_new_tokens=max_new_tokens,
                              max_context=_positions(policy, max_context))
    finally:
        vllm.close()


def rollout_outputs(
    suites: Sequence[Suite],
    model: str | tuple[Any, Any],
    *,
    max_new_tokens: int = 512,
    max_context: int | None = None,
    reuse: bool = True,
    batch_size: int = 1,
    engine: str = "hf",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``model`` greedily on every entry of the multi-turn ``suites`` (id -> ``{"turns",
    "stop"}``), ``batch_size`` entries at a time (their steps decoded together,
    :func:`restlit.evaluation.multiturn.drive`), through :func:`multi_turn_generator`: on ``hf``
    with ``reuse`` each entry's KV cache is kept across its steps and turns, and into the next
    entry of its slot as far as that entry's prompt starts the same way (the system prompt's
    opening and any tools listed first). ``max_context`` caps the positions (default: the
    model's); an entry whose prompt outgrows it stops with ``context_overflow``."""
    tokenizer, policy = load_model(model) if isinstance(model, str) else model
    jobs = [(s, i) for s in suites if s.multi_turn for i in range(len(s.ids))]
    done = _counter(progress, len(jobs))

    with multi_turn_generator(tokenizer, policy, engine=engine, max_new_tokens=max_new_tokens,
                              max_context=max_context, reuse=reuse, batch_size=batch_size) as generator:
        results = multiturn.drive([s.steps(i) for s, i in jobs], generator.serve, width=batch_size, done=done)
    return {s.ids[i]: result for (s, i), result in zip(jobs, results)}


def _interval(passed: int, items: int) -> dict[str, float | int]:
    return wilson_interval(passed, items).to_dict()


def groups(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """BFCL's leaderboard groups over the categories in ``summary`` (a group needs all of its
    categories), plus ``overall`` (the unweighted mean of the four groups, when all are there) and
    ``API-Bank`` (all items of the three levels, when all are there).

    Each is ``{"items", "accuracy", "interval", "of"}``. A pooled group's interval is the Wilson
    interval of its items; an unweighted mean's is the Wilson interval of that mean at the group's
    item count (an approximation, exact when the categories have equal sizes).
    """
    def pooled(name: str, members: Sequence[str]) -> dict[str, Any]:
        items = sum(summary[m]["items"] for m in members)
        passed = sum(summary[m]["passed"] for m in members)
        return {"items": items, "accuracy": passed / items if items else None, "interval": _interval(passed, items),
                "of": list(members)}

    def mean(members: Sequence[str], accuracies: Sequence[float], items: int) -> dict[str, Any]:
        value = sum(accuracies) / len(accuracies)
        w = wilson_interval(round(value * items), items)
        return {"items": items, "accuracy": value,
                "interval": Interval(value, min(w.low, value), max(w.high, value), items).to_dict(),
                "of": list(members)}

    out: dict[str, dict[str, Any]] = {}
    for name, categories, how in GROUPS:
        members = [f"bfcl:{c}" for c in categories]
        if not all(m in summary and summary[m]["items"] for m in members):
            continue
        if how == "pooled":
            out[name] = pooled(name, members)
        else:
            out[name] = mean(members, [summary[m]["accuracy"] for m in members],
                             sum(summary[m]["items"] for m in members))
    if len(out) == len(GROUPS):
        names = [g[0] for g in GROUPS]
        out["overall"] = mean(names, [out[n]["accuracy"] for n in names], sum(out[n]["items"] for n in names))
    levels = [f"apibank:{lv}" for lv in apibank.LEVELS]
    if all(m in summary and summary[m]["items"] for m in levels):
        out["API-Bank"] = pooled("API-Bank", levels)
    return out


def score(suites: Sequence[Suite], outputs: dict[str, Any]) -> dict[str, Any]:
    """Score every item of ``suites`` with ``outputs`` (id -> text, or ``{"turns", "stop"}`` for a
    multi-turn entry).

    An item without an output fails with reason "no prediction for this id". Returns
    ``{"summary": {suite: {"items", "passed", "accuracy", "interval", ...metrics}, "overall": {...}},
    "groups": {...}, "items": [{"suite", "id", "passed", "reason", "output" | "trajectory", ...}],
    "missing": count}``; ``overall`` has the micro ``accuracy`` over all items and the
    ``macro_accuracy`` over suites, ``groups`` BFCL's leaderboard groups (:func:`groups`); every
    ``interval`` is a 95% Wilson interval. A suite's extra metrics (heldout's) cover the items that
    had an output. A multi-turn record keeps the executed trajectory instead of the output.
    """
    summary: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    missing = 0
    for suite in suites:
        records = []
        for i, item_id in enumerate(suite.ids):
            if item_id in outputs and suite.multi_turn:
                rec = {"suite": suite.name, "id": item_id, **suite.score(i, outputs[item_id])}
            elif item_id in outputs:
                output = outputs[item_id]
                rec = ({"passed": False, "reason": "expected one output text, got the steps of turns"}
                       if not isinstance(output, str) else suite.score(i, output))
                rec = {"suite": suite.name, "id": item_id, **rec, "output": output}
            else:
                missing += 1
                rec = {"suite": suite.name, "id": item_id, "passed": False,
                       "reason": "no prediction for this id", "output": None}
            records.append(rec)
        passed = sum(r["passed"] for r in records)
        summary[suite.name] = {"items": len(records), "passed": passed,
                               "accuracy": passed / len(records) if records else None,
                               "interval": _interval(passed, len(records)), **suite.metrics()}
        items.extend(records)
    total = sum(s["items"] for s in summary.values())
    passed = sum(s["passed"] for s in summary.values())
    accuracies = [s["accuracy"] for s in summary.values() if s["accuracy"] is not None]
    leaderboard = groups(summary)
    summary["overall"] = {
        "items": total, "passed": passed, "accuracy": passed / total if total else None,
        "interval": _interval(passed, total),
        "macro_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
    }
    return {"summary": summary, "groups": leaderboard, "items": items, "missing": missing}


def write_report(result: dict[str, Any], out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write ``out_dir/eval.json`` (``config``, ``summary``, ``groups``, per-item ``items``); return
    its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    payload = {"config": config, "summary": result["summary"], "groups": result.get("groups", {}),
               "missing": result["missing"], "items": result["items"]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
