"""Scoring throughput of saved outputs (``restlit eval --predictions``), on one core; and, with
``--multi-turn``, the time per BFCL ``multi_turn_base`` entry of the embedded model with and
without prefix reuse.

    .venv/bin/python -m benchmarks.bench_eval
    .venv/bin/python -m benchmarks.bench_eval --multi-turn [--entries 6] [--max-new-tokens 64] [--batch-size 6] [--vllm]
    .venv/bin/python -m benchmarks.bench_eval --single-turn --model DIR --suite heldout --data DIR --suite bfcl:simple_python \\
        [--items 32] [--max-new-tokens 128] [--batch-size 16]

Inputs: all 3,475 items of BFCL's ten single-turn AST categories (bfcl-eval's data), each with
(a) the canonical reference output built from its possible answers (nearly all pass), (b) the
same calls in Python-call syntax, and (c) a failing variant (a wrong value, an extra call, or a
call on an irrelevance item), so that the reason-building paths are timed too.
Rows: items/s through ``bfcl.score_output`` (parse + AST check), and through the whole
``--predictions`` path (load the categories and the predictions file, score, write eval.json).
Goal (issue 7): >= 5,000 items/s.

Multi-turn (issue 16): the first ``--entries`` entries of ``multi_turn_base`` run greedily by the
embedded SmolLM2-135M through :class:`restlit.evaluation.session.PrefixCacheGenerator`, in four
modes: as ``restlit eval`` runs them (each entry's KV cache kept across its steps and turns,
``--batch-size`` entries decoded together, continuously: an entry whose step ends starts its next
one at once, :meth:`restlit.evaluation.session.PrefixCacheGenerator.serve`); the same in rounds
(each round's steps together, the next round when all have ended); keeping the cache but one
entry at a time; and encoding every step's prompt from scratch, one entry at a time; with ``--vllm`` also on the vLLM engine (``restlit eval --engine vllm``: each round's
conversations in one ``generate``, vLLM's prefix cache doing the reuse; the engine's start is not
timed). Rows: seconds per entry, steps, prompt tokens encoded, the speed-up over the last mode,
and whether all modes gave the same outputs. Goal: >= 3x from reuse.

Single-turn (``--single-turn``): :func:`single_turn`, the generation behind ``restlit eval``'s
single-turn suites and the demo's scores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._results import markdown_table, record
from restlit.evaluation import bfcl, multiturn, run
from restlit.prompts import render_target
from restlit.toolcalls import parse_tool_calls

REPEATS = 5


def median_seconds(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def python_syntax(output: str) -> str:
    calls = parse_tool_calls(output).calls
    return "[" + ", ".join(f"{c.name}(" + ", ".join(f"{k}={v!r}" for k, v in c.arguments.items()) + ")"
                           for c in calls) + "]"


def failing(item: bfcl.BFCLItem, output: str) -> str:
    """A wrong variant of a reference output: a call on an irrelevance item, else the first call
    with its first argument replaced (or, without arguments, duplicated)."""
    if item.irrelevance:
        name = item.functions[0]["name"] if item.functions else "tool"
        return render_target("", [{"name": name, "arguments": {}}], None)
    calls = [c.as_dict() for c in parse_tool_calls(output).calls]
    if calls[0]["arguments"]:
        key = next(iter(calls[0]["arguments"]))
        calls[0]["arguments"][key] = "zzz wrong value"
    else:
        calls.append(calls[0])
    return render_target("", calls, None)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    items = [it for c in bfcl.CATEGORIES for it in bfcl.load_category(c)]
    refs = [bfcl.reference_output(it) for it in items]
    sets = {
        "canonical references": refs,
        "Python-call syntax": [python_syntax(r) if not it.irrelevance else r for it, r in zip(items, refs)],
        "failing variants": [failing(it, r) for it, r in zip(items, refs)],
    }
    rows = []
    for label, outputs in sets.items():
        passed = sum(bfcl.score_output(it, o).passed for it, o in zip(items, outputs))
        sec = median_seconds(lambda outputs=outputs: [bfcl.score_output(it, o) for it, o in zip(items, outputs)])
        rows.append([f"score_output, {label}", f"{len(items):,}", f"{passed / len(items):.1%}",
                     f"{len(items) / sec:,.0f}", ">= 5,000"])

    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "preds.jsonl"
        mixed = [refs[i] if i % 2 else sets["failing variants"][i] for i in range(len(items))]
        preds.write_text("".join(json.dumps({"id": it.id, "output": o}) + "\n" for it, o in zip(items, mixed)))

        def whole_path():
            suites = [run.load_suite(name) for name in run.parse_suites(["bfcl:all"])]
            result = run.score(suites, run.load_predictions(preds))
            run.write_report(result, tmp, {})
            return result

        accuracy = whole_path()["summary"]["overall"]["accuracy"]
        sec = median_seconds(whole_path)
        rows.append(["whole --predictions path (load, score, write eval.json), half failing",
                     f"{len(items):,}", f"{accuracy:.1%}", f"{len(items) / sec:,.0f}", ">= 5,000"])

    table = markdown_table(["operation", "items", "passed", "items/s (median)", "goal"], rows)
    print(table)
    record("bench_eval", "Scoring throughput of saved outputs (one core)",
           f"All {len(items):,} items of BFCL's ten AST categories (bfcl-eval's data), median of "
           f"{REPEATS} runs. The references that fail are BFCL's four unpassable items.\n\n{table}",
           "python -m benchmarks.bench_eval")


def multi_turn(entries: int, max_new_tokens: int, batch_size: int, vllm: bool) -> None:
    from restlit.evaluation.session import PrefixCacheGenerator, serve_in_rounds

    tokenizer, policy = run.load_model("smollm2-135m")
    items = multiturn.load_category("multi_turn_base", entries)
    PrefixCacheGenerator(policy, tokenizer, max_new_tokens=2)(multiturn.initial_messages(items[0]))  # warm-up
    modes = [(f"kept, {batch_size} entries decoded continuously (restlit eval --batch-size {batch_size})", True,
              batch_size),
             (f"kept, {batch_size} entries in rounds (each round waits for its longest step)", "rounds", batch_size),
             ("kept across steps and turns, one entry at a time", True, 1),
             ("none (every step encoded from scratch), one entry at a time", False, 1)]
    if vllm:
        modes.insert(1, (f"vLLM's prefix cache, {batch_size} entries per round (restlit eval --engine vllm)", "vllm",
                         batch_size))
    seconds, outputs, rows, starts = [], [], [], []
    for name, reuse, width in modes:
        engine = "vllm" if reuse == "vllm" else "hf"
        started = time.perf_counter()
        with run.multi_turn_generator(tokenizer, policy, engine=engine, max_new_tokens=max_new_tokens,
                                      reuse=reuse is not False, batch_size=width) as generator:  # as restlit eval runs
            if engine == "vllm":  # the engine's start (build, compile, load) is not in the row's time
                starts.append(f"The vLLM engine started in {time.perf_counter() - started:.0f} s. ")
            serve = functools.partial(serve_in_rounds, generator.many) if reuse == "rounds" else generator.serve
            t0, c0 = time.perf_counter(), time.process_time()
            outs = multiturn.drive([multiturn.entry_steps(e) for e in items], serve, width=width)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        seconds.append(wall)
        outputs.append(outs)
        steps = sum(len(t) for o in outs for t in o["turns"])
        encoded = f"{generator.encoded:,}" if isinstance(generator, PrefixCacheGenerator) else "(vLLM's)"
        rows.append([name, len(items), steps, encoded, f"{cpu / len(items):.1f}",
                     f"{wall / len(items):.1f}"])
        print(rows[-1], flush=True)
    for row, wall in zip(rows, seconds):
        row.append(f"{seconds[-1] / wall:.1f}x")
    same = all(o == outputs[0] for o in outputs)
    table = markdown_table(["prefix reuse", "entries", "steps", "prompt tokens encoded", "CPU s / entry",
                            "wall s / entry", "speed-up (wall)"],
                           rows)
    print(table)
    print(f"same outputs in all {len(modes)} modes: {same}")
    record("bench_eval_multiturn", "BFCL multi-turn: time per multi_turn_base entry, embedded model",
           f"The first {len(items)} entries of `multi_turn_base`, SmolLM2-135M (embedded), greedy, "
           f"`max_new_tokens={max_new_tokens}`, linear weights packed for the rows decoded together as "
           f"`restlit eval` runs them, default torch threads, the modes one after another in one process; "
           f"wall seconds on the idle machine (CPU seconds count both threads). Same outputs in all {len(modes)} "
           f"modes: {'yes' if same else 'no'}. {''.join(starts)}"
           f"Goal: >= 3x from reuse.\n\n{table}",
           f"python -m benchmarks.bench_eval --multi-turn --entries {entries} --max-new-tokens {max_new_tokens} "
           f"--batch-size {batch_size}" + (" --vllm" if vllm else ""))


def single_turn(model: str, suites: list[str], data: str | None, items: int, max_new_tokens: int,
                batch_size: int) -> None:
    """Greedy generation of the first ``items`` items of each suite by ``model``: continuous
    batching (:meth:`PrefixCacheGenerator.answers`, what ``restlit eval`` and the demo run on the
    HF engine) against the rollout engine's batches (``continuous=False``:
    :class:`restlit.rollout.hf.HFEngine`, ``batch_size`` prompts shortest first, each batch
    decoding until its longest output ends), alternated ABAB in one process."""
    tokenizer, policy = run.load_model(model)
    loaded = [run.load_suite(name, data=Path(data) if data else None, limit=items) for name in suites]
    conversations = [s.messages(i) for s in loaded for i in range(len(s.ids))]

    def generate(continuous: bool) -> list[str]:
        return run.generate_outputs(conversations, (tokenizer, policy), batch_size=batch_size,
                                    max_new_tokens=max_new_tokens, continuous=continuous)

    modes = {"continuous batching (restlit eval)": functools.partial(generate, True),
             f"batches of {batch_size}, each until its longest output": functools.partial(generate, False)}
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, list[str]] = {}
    for _ in range(2):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
            print(name, f"{seconds[name][-1]:.1f} s", flush=True)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in outputs[next(iter(modes))]]
    base = min(seconds[list(modes)[-1]])
    rows = [[name, len(conversations), " / ".join(f"{t:.1f}" for t in ts), f"{min(ts) / len(conversations):.2f}",
             f"{base / min(ts):.2f}x"] for name, ts in seconds.items()]
    table = markdown_table(["generation", "items", "wall s (run 1 / run 2)", "s / item (best)", "speed-up (best)"],
                           rows)
    same = sum(a == b for a, b in zip(*outputs.values()))
    print(table)
    print(f"same outputs: {same} of {len(conversations)}")
    names = ", ".join(f"{len(s.ids)} {s.name}" for s in loaded)
    record("bench_eval_single_turn", "Single-turn generation: continuous batching vs batches",
           f"{names} items, model `{model}`, greedy, `max_new_tokens={max_new_tokens}`, {batch_size} rows decoding "
           f"at a time, the two modes alternated twice in one process, idle machine. Output lengths (tokens): median "
           f"{statistics.median(lengths):.0f}, max {max(lengths)}, {sum(n >= max_new_tokens for n in lengths)} of "
           f"{len(lengths)} at the limit. Same outputs: {same} of {len(conversations)}.\n\n{table}",
           f"python -m benchmarks.bench_eval --single-turn --model {model} --suite {' --suite '.join(suites)}"
           + (f" --data {data}" if data else "") + f" --items {items} --max-new-tokens {max_new_tokens} "
           f"--batch-size {batch_size}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--multi-turn", action="store_true", help="time multi-turn entries instead of scoring")
    parser.add_argument("--entries", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=6, help="multi-turn entries decoded together")
    parser.add_argument("--vllm", action="store_true", help="multi-turn: add a row on the vLLM engine")
    parser.add_argument("--single-turn", action="store_true",
                        help="time single-turn generation: continuous batching vs batches")
    parser.add_argument("--model", default="smollm2-135m", help="single-turn: the model generating")
    parser.add_argument("--suite", action="append", help="single-turn: a suite (repeatable; default bfcl:simple_python)")
    parser.add_argument("--data", help="single-turn: the prepared directory of the heldout suite")
    parser.add_argument("--items", type=int, default=32, help="single-turn: items per suite")
    args = parser.parse_args()
    if args.single_turn:
        single_turn(args.model, args.suite or ["bfcl:simple_python"], args.data, args.items, args.max_new_tokens,
                    args.batch_size)
    elif args.multi_turn:
        multi_turn(args.entries, args.max_new_tokens, args.batch_size, args.vllm)
    else:
        main()
