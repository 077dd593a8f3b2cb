"""Does RL lower BFCL? GRPO and ResT from the demo's SFT model, seeds, BFCL simple_python beyond the demo's 32.

Every `make demo` run showed BFCL simple_python falling after the ResT fit on its 32 items (SFT 62.5 ->
ResT 53.1 in float32). This benchmark asks whether that is ResT, RL in general, or those 32 items:

1. ``restlit ablate`` from the demo's SFT model (``runs/quickstart/sft/final``, on the demo's prepared
   data): arms ``grpo`` (uniform weights) and ``rest`` (the demo's fit: entropy weights + curriculum),
   ``--seeds`` seeds each, the demo's 8 steps; every final model and the start scored greedily on the
   held-out split and the first ``--items`` BFCL simple_python items (128 new tokens, as the demo);
2. per model, BFCL's verdicts counted by kind (pass, malformed call, missing parameter, other), over all
   items and over the demo's first 32 (malformed calls also by how many hold a key without quotes),
   and each run paired item by item against the start.

Needs ``make demo`` first (its SFT model and prepared data). Resumable: finished arms are kept in
``--workdir``. About 50 minutes on the 2-core machine at the defaults.

    .venv/bin/python benchmarks/bench_bfcl_rl.py [--workdir runs/bench-bfcl-rl] [--items 96] [--seeds 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "bfcl:simple_python"
DEMO_ITEMS = 32
ARMS = ["grpo:objective.weights.mode=uniform,reward.mode=scheduled",
        "rest:objective.weights.mode=entropy,objective.curriculum.by=step,reward.mode=scheduled"]


def verdict_kind(item: dict) -> str:
    """One BFCL verdict as pass / malformed call / missing parameter / other (from its reason)."""
    reason = item["reason"]
    if item["passed"]:
        return "pass"
    if reason.startswith("malformed tool call"):
        return "malformed call"
    if reason.startswith(("missing required parameter", "missing parameter")):
        return "missing parameter"
    return "other"


KINDS = ("pass", "malformed call", "missing parameter", "other")
# a key written without its quotes after the first parameter: `{"a": 1, b: -3}`
_UNQUOTED_KEY = re.compile(r",\s*[A-Za-z_]\w*\s*:")


def unquoted_key(item: dict) -> bool:
    """A malformed call whose parameters hold a key without quotes."""
    return verdict_kind(item) == "malformed call" and bool(
        _UNQUOTED_KEY.search(item["output"].split('"parameters"', 1)[-1]))


def eval_items(eval_json: Path) -> list[dict]:
    return json.loads(eval_json.read_text())["items"]


def bfcl_items(eval_json: Path) -> list[dict]:
    return [it for it in eval_items(eval_json) if it["suite"] == SUITE]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start", default="runs/quickstart/sft/final", help="the SFT model (make demo's)")
    p.add_argument("--data", default="runs/quickstart/data", help="the demo's prepared data")
    p.add_argument("--workdir", default="runs/bench-bfcl-rl")
    p.add_argument("--items", type=int, default=96, help="BFCL simple_python items (and held-out items, at most)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._results import markdown_table, record
    from restlit.config import load_config
    from restlit.experiments.ablation import make_plan, markdown, paired_cell, run_ablation, summarize
    from restlit.stats import paired_difference

    if not (Path(args.start) / "config.json").is_file() or not Path(args.data).is_dir():
        sys.exit(f"bench_bfcl_rl: {args.start} or {args.data} is missing: run `make demo` first")
    config = REPO / "configs" / "quickstart-cpu.yaml"
    steps = load_config(config).trainer.max_steps  # the demo's fit; scored once, at its end
    overrides = [f"model.path={args.start}", f"data.prepared={args.data}", "data.raw=[]",
                 f"ablation.suites=[heldout,{SUITE}]", f"ablation.eval_limit={args.items}", f"ablation.eval_every={steps}",
                 "ablation.eval_tokens=128", "logging.progress_bar=false"]
    plan = make_plan(config, overrides, arms=ARMS, seeds=args.seeds, out=args.workdir)
    run_ablation(plan)
    summary = summarize(plan)

    start_items = eval_items(plan.out / "start" / "eval.json")
    start = [it for it in start_items if it["suite"] == SUITE]
    models = {"start (SFT)": start}
    for arm in plan.arms:
        for seed in range(plan.seeds):
            models[f"{arm} seed {seed}"] = bfcl_items(plan.run_dir(arm, seed) / "eval" / f"step{steps}" / "eval.json")
    rows = []
    for name, items in models.items():
        row: list[object] = [name]
        for subset in (slice(None), slice(DEMO_ITEMS)):
            part = items[subset]
            counts = {k: sum(verdict_kind(it) == k for it in part) for k in KINDS}
            row += [f"{counts['pass']}/{len(part)}",
                    f"{counts['malformed call']} ({sum(unquoted_key(it) for it in part)})"]
            if subset == slice(None):
                row += [counts["missing parameter"], counts["other"]]
            row.append("-" if items is start else paired_cell(paired_difference(
                [float(it["passed"]) for it in part], [float(it["passed"]) for it in start[subset]]).to_dict()))
        rows.append(row)
    n = len(start)
    held = sum(it["suite"] == "heldout" for it in start_items)
    headers = ["model", f"passed of {n}", "malformed call (unquoted key)", "missing parameter", "other",
               f"vs start, {n} items", f"passed of the demo's {DEMO_ITEMS}", "malformed call (unquoted key)",
               f"vs start, the demo's {DEMO_ITEMS}"]
    t = plan.base
    body = (f"From `{args.start}` on `{args.data}`; {args.seeds} seed(s) per arm, {steps} steps x "
            f"{t.trainer.prompts_per_step} prompts x {t.rollout.n} completions each (the demo's fit); BFCL simple_python: the first {n} items, greedy, 128 new tokens; held-out: "
            f"the first {held} items of the validation split.\n\n### `restlit ablate` table\n\n{markdown(summary)}\n"
            f"### BFCL simple_python verdicts by kind, and each run against the start, item by item\n\n"
            f"{markdown_table(headers, rows)}\n\nvs start: points [95% t interval], exact sign-test p "
            "(wins+/losses- count the items that differ).")
    print(body)
    if not args.no_record:
        record("bench_bfcl_rl", "Does RL lower BFCL? GRPO and ResT from the demo's SFT model", body,
               "python benchmarks/bench_bfcl_rl.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
