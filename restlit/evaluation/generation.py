"""Greedy outputs of a model for ``restlit eval``: loading the model (through :mod:`restlit.models`),
choosing the rollout engine, single-turn generation (:func:`generate_outputs`) and the multi-turn
rollouts (:func:`rollout_outputs`). A single-turn item's output is one text; a multi-turn entry's
is ``{"turns": [[step text, ...], ...], "stop": None | reason}``.

Torch, transformers and the engines are imported only when a model is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from restlit.evaluation import multiturn
from restlit.evaluation.suites import EvalError, Suite

__all__ = ["ENGINES", "check_engine", "eval_engine", "generate_outputs", "load_model", "multi_turn_generator",
           "rollout_outputs"]


def load_model(model: str) -> tuple[Any, Any]:
    """``(tokenizer, policy)`` of a model directory or alias, on the GPU when there is one;
    EvalError when it cannot be found."""
    import torch
    from transformers.utils import logging as hf_logging

    from restlit.models import ModelNotFound, check_vocabulary, load_policy, load_tokenizer

    # transformers' own "Loading weights" bar would interleave with the caller's progress bar
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = load_tokenizer(model)
        policy = load_policy(model)
        check_vocabulary(policy, tokenizer, model)
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
    from restlit.formats import prompt_ids
    from restlit.rollout.base import SamplingConfig

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
