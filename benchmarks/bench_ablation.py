"""Does ResT help? The CPU miniature of the paper's ablation, on the embedded SmolLM2-135M.

1. the demo's SFT warm start (``configs/quickstart-cpu.yaml``: 40 steps x 2 samples);
2. ``restlit diagnose variance`` at the SFT model: K rollout batches of the first ``--variance-prompts``
   training prompts (8: with a training step's 2, most batches had no advantage at all),
   the policy gradient of uniform / static / entropy weights on the same samples;
3. ``restlit ablate`` from the SFT model: the five default arms (``grpo``, ``rest``, ``static``,
   ``entropy-no-curriculum``, ``rest-fixed-reward``, in that order, so that a run cut short has the
   main comparison first), each ``--steps`` steps of the demo's shape (2 prompts x 4 completions,
   128 tokens), scored greedily on ``--heldout`` held-out items every ``--eval-every`` steps.

Sizes are chosen to finish within about an hour on an idle 2-core machine (110 min measured on a
loaded one, 2026-12-01). Every stage is
resumable (the SFT model, the variance report and finished arms are kept in ``--workdir``); the
tables go into ``benchmarks/RESULTS.md`` (section ``bench_ablation``) after each stage, marked
partial until the last arm is done, and the curves into ``benchmarks/ablation/``.

    .venv/bin/python benchmarks/bench_ablation.py [--workdir runs/bench-ablation] [--steps 8] [--eval-every 4]
        [--heldout 32] [--batches 6] [--variance-prompts 8] [--seeds 1] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "benchmarks" / "ablation"
CONFIG = REPO / "configs" / "quickstart-cpu.yaml"
ORDER = ["grpo", "rest", "static", "entropy-no-curriculum", "rest-fixed-reward"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(REPO / "runs" / "bench-ablation"))
    p.add_argument("--steps", type=int, default=8, help="RL steps per arm")
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--heldout", type=int, default=32, help="held-out items per evaluation")
    p.add_argument("--batches", type=int, default=6, help="rollout batches K of the variance diagnostic")
    p.add_argument("--variance-prompts", type=int, default=8,
                   help="prompts per variance batch (more than a training step's 2, so that some group has an advantage)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--config", default=str(CONFIG), help="base config (a smoke test: configs/tiny-test.yaml)")
    p.add_argument("--set", action="append", default=[], help="more overrides for every stage")
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--summarize-only", action="store_true",
                   help="train nothing: rewrite the summary of what has finished and record it")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._results import RESULTS, record
    from restlit.config import load_config
    from restlit.experiments.ablation import DEFAULT_ARMS, make_plan, run_ablation, write_summary
    from restlit.experiments.variance import markdown as variance_markdown
    from restlit.experiments.variance import measure_variance, write_report
    from restlit.training.run import sft

    work = Path(args.workdir)
    common = [f"output_dir={work / 'quickstart'}", f"data.cache_dir={work / 'cache'}", "logging.progress_bar=false",
              "logging.tensorboard=false", *args.set]
    seconds: dict[str, float] = {}
    import torch

    sizes = (f"SmolLM2-135M-Instruct, float32, {torch.get_num_threads()} thread(s); SFT 40 steps x 2 samples (the demo's); variance: "
             f"{args.batches} rollout batches of the first {args.variance_prompts} training prompts x 4 completions (128 tokens), full-model "
             f"gradients count-sketched to 65,536 numbers; ablation: {args.steps} steps x 2 prompts x 4 completions "
             f"per arm, lr 1e-5, {args.seeds} seed(s), greedy held-out evaluation of {args.heldout} items at steps "
             f"0, {', '.join(str(s) for s in range(args.eval_every, args.steps + 1, args.eval_every))}")

    def publish(partial: str) -> None:
        (work / "seconds.json").write_text(json.dumps(seconds))
        parts = [sizes + ".", f"Stage seconds so far: {json.dumps(seconds)}."]
        vpath = work / "variance" / "variance.json"
        if vpath.is_file():
            parts += ["### Gradient variance at the SFT model (`restlit diagnose variance`)",
                      (work / "variance" / "variance.md").read_text()]
        apath = work / "ablation" / "ablation.json"
        if apath.is_file():
            parts += ["### Ablation from the SFT model (`restlit ablate`)", (work / "ablation" / "ablation.md").read_text(),
                      "Curves: `benchmarks/ablation/reward.png`, `benchmarks/ablation/heldout.png`."]
        body = "\n\n".join(([f"**PARTIAL: {partial}**"] if partial else []) + parts)
        print(body, flush=True)
        if not args.no_record:
            FIGURES.mkdir(exist_ok=True)
            for src in (work / "ablation" / "reward.png", work / "ablation" / "heldout.png",
                        work / "ablation" / "ablation.json", vpath):
                if src.is_file():
                    shutil.copy2(src, FIGURES / src.name)
            record("bench_ablation", "Does ResT help? Ablation and gradient variance on the embedded model, CPU", body,
                   "python benchmarks/bench_ablation.py " + " ".join(sys.argv[1:]))

    sft_model = work / "quickstart" / "sft" / "final"
    t = time.perf_counter()
    if not (sft_model / "config.json").is_file() and not args.summarize_only:
        sft(load_config(args.config, common))
    if not args.summarize_only:
        seconds["sft"] = round(time.perf_counter() - t)

    t = time.perf_counter()
    vdir = work / "variance"
    if not (vdir / "variance.json").is_file() and not args.summarize_only:
        vconfig = load_config(args.config, [*common, f"model.path={sft_model}", "model.init=pretrained",
                                                f"trainer.prompts_per_step={args.variance_prompts}"])
        report = measure_variance(vconfig, batches=args.batches)
        write_report(report, vdir)
        print(variance_markdown(report), flush=True)
    if not args.summarize_only:
        seconds["variance"] = round(time.perf_counter() - t)
    publish("the ablation has not run yet")

    t = time.perf_counter()
    arms = [f"{name}:{','.join(DEFAULT_ARMS[name])}" for name in ORDER]
    plan = make_plan(args.config, [*common, f"model.path={sft_model}", "model.init=pretrained", f"trainer.max_steps={args.steps}",
                              f"trainer.checkpoint_every={args.steps}", f"ablation.eval_every={args.eval_every}",
                              f"ablation.eval_limit={args.heldout}", "ablation.suites=[heldout]"],
                     arms=arms, seeds=args.seeds, out=work / "ablation")

    def after_arm(path: Path) -> None:
        seconds["ablation"] = round(time.perf_counter() - t)
        done = json.loads(path.read_text())
        if done["unfinished"]:
            publish(f"arms not finished yet: {', '.join(done['unfinished'])}")

    if args.summarize_only:
        if (work / "seconds.json").is_file():  # the training run's own timings
            seconds.update(json.loads((work / "seconds.json").read_text()))
        else:
            found = re.findall(r"Stage seconds so far: (\{.*?\})", RESULTS.read_text() if RESULTS.is_file() else "")
            seconds.update(json.loads(found[-1]) if found else {})
        done = json.loads(write_summary(plan).read_text())
        publish(f"stopped before these arms finished: {', '.join(done['unfinished'])}" if done["unfinished"] else "")
        return
    run_ablation(plan, keep_checkpoints=False, after_arm=after_arm)
    seconds["ablation"] = round(time.perf_counter() - t)
    publish("")


if __name__ == "__main__":
    main()
