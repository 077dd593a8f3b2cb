"""The testbed benchmark (docs/testbed.md): ResT against GRPO and against its opposite on a
controlled synthetic tool-use task, with seeds, paired, per think length.

Per think length L: generate the tasks, ``restlit prepare``, ``restlit sft`` a random-init tiny
Llama, ``restlit ablate`` the arms (paired seeds), ``restlit diagnose variance`` at checkpoints of
the grpo arm; then the tables (:mod:`restlit.experiments.testbed.analysis`), a figure of the
held-out exact-match curves per arm with their seed bands, and a RESULTS.md section.

    python benchmarks/bench_testbed.py                 # the recorded size (about an hour on 2 cores)
    python benchmarks/bench_testbed.py --smallest      # a minute or two: the slow test's size

Think lengths run side by side (``--jobs``), each command on one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import record
from restlit.experiments.testbed import analysis
from restlit.experiments.testbed.driver import Size, run_task, setup, tasks

HERE = Path(__file__).resolve().parent / "testbed"
FULL = Size()
SMALLEST = Size(think_lengths=(0, 8), arms=("grpo", "rest", "top-entropy"), seeds=2, steps=2, eval_every=1,
                eval_items=8, sft_steps=20, sft_stages=1, prompts_per_step=2, completions=4, variance_batches=2,
                variance_steps=(0, 2))


def plot(results: dict[int, dict], path: Path) -> None:
    """Held-out exact match per arm (mean over seeds, band: min to max over seeds), one panel per L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(max(7.5, 5.5 * len(results)), 4.2), squeeze=False)
    for ax, (think, res) in zip(axes[0], sorted(results.items())):
        for arm, seeds in res["curves"].items():
            steps = next(iter(seeds.values()))["steps"]
            ys = [c["exact_match"] for c in seeds.values()]
            mean = [sum(col) / len(col) for col in zip(*ys)]
            line, = ax.plot(steps, mean, marker="o", label=f"{arm} ({len(ys)} seeds)")
            ax.fill_between(steps, [min(col) for col in zip(*ys)], [max(col) for col in zip(*ys)],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(f"think length L = {think} words")
        ax.set_xlabel("RL step")
        ax.set_ylabel("held-out exact match")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Testbed: held-out exact match, mean over seeds (band: min to max over seeds)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smallest", action="store_true", help="The smallest size (the slow test's).")
    ap.add_argument("--out", type=Path, default=None, help="Work directory (default: runs/testbed).")
    ap.add_argument("--think", type=int, nargs="+", help="Think lengths in words (default: the size's).")
    ap.add_argument("--seeds", type=int, help="Seeds per arm.")
    ap.add_argument("--steps", type=int, help="RL steps.")
    ap.add_argument("--arms", nargs="+", help="Arms (grpo, rest, top-entropy, entropy-no-curriculum, static).")
    ap.add_argument("--sft-steps", type=int, help="SFT steps.")
    ap.add_argument("--jobs", type=int, default=2, help="Think lengths run side by side.")
    ap.add_argument("--deadline", type=float, default=0, help="Minutes after which no new run starts (0: none).")
    ap.add_argument("--note", default="", help="A line added to the RESULTS.md section (e.g. what was cut).")
    ap.add_argument("--no-record", action="store_true", help="Do not write RESULTS.md or the figure.")
    args = ap.parse_args()
    size = SMALLEST if args.smallest else FULL
    changes = {k: v for k, v in {"think_lengths": tuple(args.think) if args.think else None, "seeds": args.seeds,
                                 "steps": args.steps, "arms": tuple(args.arms) if args.arms else None,
                                 "sft_steps": args.sft_steps}.items() if v is not None}
    size = dataclasses.replace(size, **changes)
    if size.steps != FULL.steps and "variance_steps" not in changes:
        size = dataclasses.replace(size, variance_steps=tuple(s for s in size.variance_steps if s <= size.steps))
    out = args.out or Path("runs") / ("testbed-smallest" if args.smallest else "testbed")
    started, load0 = time.time(), os.getloadavg()
    setup(out, size)
    deadline = started + 60 * args.deadline if args.deadline else None
    done = {task: threading.Event() for task in tasks(size)}

    def work(task: tuple[str, int, int]) -> None:
        kind, think, _ = task
        needs = {"sft": [], "ablate": [("sft", think, 0)], "variance": [("ablate", think, 0)]}[kind]
        for need in needs:
            done[need].wait()
        try:
            if deadline and time.time() > deadline:
                print(f"deadline: skipped {task}", flush=True)
                return
            run_task(out, size, task)
        finally:
            done[task].set()

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(work, tasks(size)))
    results, tables = {}, []
    for think in size.think_lengths:
        if not list((out / f"L{think}" / "ablation").glob("s*/*/seed0/result.json")):
            print(f"L = {think}: no finished run (cut by the deadline)")
            continue
        results[think] = analysis.analyse(out / f"L{think}" / "ablation")
        rows = analysis.variance_rows(out / f"L{think}" / "variance")
        results[think]["variance"] = rows
        tables.append(analysis.markdown(think, results[think], rows))
    minutes, load1 = (time.time() - started) / 60, os.getloadavg()
    (out / "testbed.json").write_text(json.dumps(results, indent=1) + "\n")
    text = "\n".join(tables)
    print(text)
    if args.no_record:
        return
    figure = (out if args.smallest else HERE) / "curves.png"
    plot(results, figure)
    command = "python benchmarks/bench_testbed.py " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])
    s = size
    stages = {think: json.loads((out / f"L{think}" / "sft-stages.json").read_text()) for think in results}
    spans = {}
    for t in results:
        first = min(p.stat().st_mtime for p in (out / f"L{t}").glob("sft-stage*/**/config.yaml"))
        last = max(p.stat().st_mtime for p in (out / f"L{t}" / "ablation").glob("s*/*/seed0/result.json"))
        spans[t] = (last - first) / 60
    span_text = ", ".join(f"L = {t}: {m:.0f} min" for t, m in spans.items())
    sft_text = "; ".join(f"L = {t}: {st[-1]['steps']} steps, held-out EM " + " -> ".join(
        f"{x['exact_match']:.3f}" for x in st) for t, st in stages.items())
    body = (f"- load average at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, "
            f"at end {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} (a shared machine); this invocation {minutes:.0f} min; "
            f"first SFT stage to last finished run (files' times, across invocations): {span_text}\n"
            f"- sizes: think lengths {list(s.think_lengths)} filler words (about one BPE token each); arms "
            f"{', '.join(s.arms)}; {s.seeds} seeds per arm, paired; {s.steps} RL steps of {s.prompts_per_step} prompts "
            f"x {s.completions} completions, lr {s.lr}; held-out exact match on {s.eval_items} prompts every "
            f"{s.eval_every} steps, greedy, up to 1.5 L + 48 new tokens (rollouts too); SFT from random init in stages of "
            f"{s.sft_steps} steps of {s.sft_batch} (lr {s.sft_lr}) until held-out EM >= {s.sft_target} ({sft_text}); model: "
            f"Llama, {s.layers} layers, hidden {s.hidden}, {s.heads} heads, BPE vocab {s.vocab}; variance diagnostic: "
            f"{s.variance_batches} batches of {s.prompts_per_step} prompts x {s.completions} completions, exact gradients, "
            f"at grpo seed 0 steps {list(s.variance_steps)}; steps to threshold: first scored step with EM >= start + 0.2 "
            f"(never reached: counted as {s.steps + s.eval_every})\n"
            f"- figure: `benchmarks/testbed/curves.png`\n" + (f"- note: {args.note}\n" if args.note else "") + f"\n{text}")
    if not args.smallest:
        record("testbed", "Testbed: ResT vs GRPO vs top-entropy on a controlled tool-use task", body, command)
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
