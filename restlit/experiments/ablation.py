"""``restlit ablate``: arms of one config, trained side by side from one start, scored alike.

An *arm* is a named list of config overrides (``KEY=VALUE``, as ``--set`` takes them). Every arm
is :func:`restlit.training.run.fit` on ``load_config(config, overrides + arm)``, so all arms

- start from the same model (``model.path``, e.g. the SFT output),
- see the same prompts in the same order (batches are a function of the step and ``data.seed``)
  and the same rollout seeds (a function of ``trainer.seed`` and the step),
- get the same compute (steps, prompts per step, completions, tokens):

overriding ``model.*``, ``data.*``, ``trainer.max_steps``, ``trainer.prompts_per_step``,
``trainer.seed``, ``rollout.n``, ``rollout.max_new_tokens`` or ``output_dir`` in an arm is refused.
Seed ``s`` of ``ablation.seeds`` adds ``s`` to ``trainer.seed`` in every arm alike.

The default arms mirror the paper's ablation:

| arm | overrides |
|---|---|
| ``grpo`` | uniform weights (plain GRPO), the baseline of the paired differences |
| ``static`` | the released code's constant region weights |
| ``entropy-no-curriculum`` | entropy weights, priors frozen at ``nu = 0`` (``curriculum.by: none``) |
| ``rest`` | entropy weights and the step curriculum |
| ``rest-fixed-reward`` | ``rest`` with ToolRL's fixed reward ranges |

Every ``ablation.eval_every`` steps (and at the last step) a callback saves the policy and scores
it greedily on ``ablation.suites`` with :mod:`restlit.evaluation` (the start model is scored once,
as step 0 of every arm). Layout of ``OUT``::

    plan.json                 the base config, arms and seeds (a rerun must match it)
    start/eval.json           the shared start model's scores
    <arm>/seed<s>/            the fit run directory; evals.jsonl, train.jsonl, eval/step<N>/eval.json
    <arm>/seed<s>/result.json written when the arm's seed is finished: a rerun skips it
    ablation.json, ablation.md, reward.png, heldout.png

An unfinished arm with a checkpoint resumes from it. The table gives per arm the final and best
held-out exact match, format validity, tool-name accuracy and parameter F1 (mean over seeds with a
Student-t 95% interval; with one seed, the Wilson interval over the items), and the paired
difference of exact match to the baseline on the same items (mean over seeds per item; t interval
and exact sign-test p-value, :mod:`restlit.stats`); every other suite's accuracy with
its paired differences to the baseline and to the start model, whose row gives each suite's score.

Scoring a model is :mod:`restlit.experiments.model_scores` (shared with ``restlit demo``); the
table's cells, the Markdown table and the curves are drawn by
:mod:`restlit.experiments.ablation_table` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from restlit.config import ConfigError, RunConfig, load_config, to_dict
from restlit.experiments.ablation_table import interval_cells, markdown, paired_cell, param_f1, plot_curves
from restlit.experiments.model_scores import evaluate, item_scores
from restlit.stats import mean_interval, paired_difference

DEFAULT_ARMS: dict[str, list[str]] = {
    "grpo": ["objective.weights.mode=uniform", "reward.mode=scheduled"],
    "static": ["objective.weights.mode=static", "reward.mode=scheduled"],
    "entropy-no-curriculum": ["objective.weights.mode=entropy", "objective.curriculum.by=none",
                              "reward.mode=scheduled"],
    "rest": ["objective.weights.mode=entropy", "objective.curriculum.by=step", "reward.mode=scheduled"],
    "rest-fixed-reward": ["objective.weights.mode=entropy", "objective.curriculum.by=step", "reward.mode=fixed"],
}
BASELINE = "grpo"
SHARED = ("model.", "data.", "trainer.max_steps", "trainer.prompts_per_step", "trainer.seed", "rollout.n",
          "rollout.max_new_tokens", "output_dir", "ablation.")
HELDOUT_METRICS = ("exact_match", "format_validity", "tool_name_accuracy", "param_f1")


# ------------------------------------------------------------------------------------------------
# Arms
# ------------------------------------------------------------------------------------------------


def parse_arm(spec: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> ``(NAME, [KEY=VALUE, ...])``; a comma splits only before the
    next ``KEY=`` (so ``data.raw=[a,b]`` stays whole). ConfigError for anything else."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not sep or not name or "/" in name:
        raise ConfigError(f"--arm {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE...], e.g. "
                          "grpo:objective.weights.mode=uniform")
    overrides = [o.strip() for o in re.split(r",(?=\s*[A-Za-z_][\w.]*=)", rest) if o.strip()]
    if any("=" not in o for o in overrides):
        raise ConfigError(f"--arm {spec!r}: every override must be KEY=VALUE")
    return name, overrides


def check_arm(name: str, overrides: Sequence[str]) -> None:
    """ConfigError when an arm overrides what all arms must share (start, data, compute, seeds)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if any(key == s or key.startswith(s) for s in SHARED):
            raise ConfigError(f"arm {name!r}: overrides {key}, which all arms share (start, prompts, seeds, compute)")


@dataclass(frozen=True)
class Plan:
    """What an ablation runs: the base config (file + overrides), arms, seeds, where."""

    config_path: str
    overrides: tuple[str, ...]
    arms: dict[str, list[str]]
    seeds: int
    out: Path
    base: RunConfig
    random_start: RunConfig | None = None  # ``model.init: random``: saved once as OUT/start/model

    @property
    def baseline(self) -> str:
        return BASELINE if BASELINE in self.arms else next(iter(self.arms))

    def arm_config(self, arm: str, seed: int) -> RunConfig:
        """The resolved config of ``arm``'s seed ``seed``: the base, the arm's overrides, the seed."""
        return load_config(self.config_path, [*self.overrides, *self.arms[arm],
                                               f"trainer.seed={self.base.trainer.seed + seed}",
                                               f"output_dir={self.run_dir(arm, seed)}"])

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.out / arm / f"seed{seed}"

    def suites(self) -> dict[str, int]:
        return {name: self.base.ablation.eval_limit for name in self.base.ablation.suites}

    def to_dict(self) -> dict[str, Any]:
        return {"config": to_dict(self.base), "arms": self.arms, "seeds": self.seeds, "baseline": self.baseline}


def make_plan(config_path: str | Path, overrides: Sequence[str] = (), *, arms: Sequence[str] = (),
              seeds: int | None = None, out: str | Path | None = None) -> Plan:
    """Validate everything before any training: the base config, each arm's overrides and config,
    the suites; ``arms`` (``--arm`` specs) replace the config's ``ablation.arms``, which replace the
    defaults. ConfigError (one line) for any mistake."""
    from restlit.evaluation import run

    base = load_config(config_path, list(overrides))
    arm_map = dict(parse_arm(a) for a in arms) if arms else dict(base.ablation.arms or DEFAULT_ARMS)
    if arms and len(arm_map) != len(arms):
        raise ConfigError("--arm: two arms have the same name")
    try:
        names = run.parse_suites(base.ablation.suites)
    except run.EvalError as exc:
        raise ConfigError(f"ablation.suites: {exc}") from None
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out) if out else Path(base.output_dir) / "ablation"
    random_start = None
    if base.model.init == "random":  # the start exists only in memory: every arm loads one saved copy
        random_start = base
        overrides = [*overrides, f"model.path={out / 'start' / 'model'}", "model.init=pretrained"]
        base = load_config(config_path, overrides)
    base.ablation.suites = names
    plan = Plan(str(config_path), tuple(overrides), arm_map, seeds or base.ablation.seeds, out, base, random_start)
    for name, arm_overrides in arm_map.items():
        check_arm(name, arm_overrides)
        try:
            plan.arm_config(name, 0)
        except ConfigError as exc:
            raise ConfigError(f"arm {name!r}: {exc}") from None
    return plan


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _eval_record(step: int, result: dict[str, Any]) -> dict[str, Any]:
    summary = {k: v for k, v in result["summary"].items() if k != "overall"}
    return {"step": step, "summary": summary, "ids": {s: [r["id"] for r in result["items"] if r["suite"] == s]
                                                      for s in summary},
            "items": item_scores(result)}


class PeriodicEval(L.Callback):
    """Records the step's training reward (``train.jsonl``) and, every ``every`` steps and at
    ``max_steps``, saves the full policy (gathered under FSDP) into ``RUN/.eval-model`` and scores
    it with ``evaluate_fn`` on rank 0 (``evals.jsonl``). Steps already recorded (a resumed run)
    are not done again."""

    def __init__(self, run_dir: Path, every: int, max_steps: int, evaluate_fn: Callable[[str, int], dict]):
        self.run_dir, self.every, self.max_steps, self.evaluate_fn = run_dir, every, max_steps, evaluate_fn
        self.evals = run_dir / "evals.jsonl"
        self.train = run_dir / "train.jsonl"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        from restlit.training.run import export_final

        step = trainer.global_step
        due = (self.every and step % self.every == 0) or step == self.max_steps
        done = {r["step"] for r in _read_jsonl(self.evals)}
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            reward = trainer.callback_metrics.get("reward/total")
            if reward is not None and step not in {r["step"] for r in _read_jsonl(self.train)}:
                _append_jsonl(self.train, {"step": step, "reward": float(reward)})
        if not due or step in done:
            return
        # every rank takes part in gathering the weights (FSDP); rank 0 saves, scores and cleans up
        model = self.run_dir / ".eval-model"
        export_final(trainer, pl_module, pl_module.tokenizer, self.run_dir, out=model)
        if trainer.is_global_zero:
            _append_jsonl(self.evals, self.evaluate_fn(str(model), step))
            shutil.rmtree(model, ignore_errors=True)
        trainer.strategy.barrier()


def run_ablation(plan: Plan, *, keep_checkpoints: bool = True, reward_fn: Any = None,
                 log: Callable[[str], None] = print, after_arm: Callable[[Path], None] | None = None) -> Path:
    """Run every unfinished arm and seed of ``plan``, then write the summary; returns
    ``OUT/ablation.json``. Without ``keep_checkpoints`` a finished arm's ``checkpoints/`` (its
    restart state, optimizer included) are deleted; ``final/`` stays. ``reward_fn`` replaces
    ToolRL's reward (tests); ``after_arm(ablation_json)`` is called whenever an arm's seed has
    finished and the summary has been rewritten."""
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import fit

    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "plan.json"
    if plan_file.is_file():
        if json.loads(plan_file.read_text()) != json.loads(json.dumps(plan.to_dict())):
            raise ConfigError(f"{out} holds an ablation with another config, arms or seeds; choose another -o")
    else:
        plan_file.write_text(json.dumps(plan.to_dict(), indent=1) + "\n")
    data = ToolUseDataModule(plan.base.data, tokenizer=None)
    data.prepare_data()
    data_dir = data.directory
    suites = plan.suites()
    tokens = plan.base.ablation.eval_tokens

    if plan.random_start is not None and not (Path(plan.base.model.path) / "config.json").is_file():
        from restlit.training.run import build_tokenizer_and_policy

        start = plan.random_start  # saved as a full model; each arm puts its own adapters (model.lora) on it
        start = dataclasses.replace(start, model=dataclasses.replace(start.model, lora=None))
        tokenizer, policy = build_tokenizer_and_policy(start)
        policy.save_pretrained(plan.base.model.path)
        tokenizer.save_pretrained(plan.base.model.path)
        del policy
    start_file = out / "start" / "evals.jsonl"
    if not start_file.is_file():
        log(f"scoring the start model {plan.base.model.path}")
        result = evaluate(plan.base.model.path, suites, data_dir, out / "start", max_new_tokens=tokens)
        start_file.write_text(json.dumps(_eval_record(0, result)) + "\n")

    for arm in plan.arms:
        for seed in range(plan.seeds):
            run_dir = plan.run_dir(arm, seed)
            if (run_dir / "result.json").is_file():
                log(f"{arm} seed {seed}: finished earlier, skipped")
                continue
            config = plan.arm_config(arm, seed)
            resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
            log(f"{arm} seed {seed}: {'resuming' if resume else 'training'} ({' '.join(plan.arms[arm])})")

            def evaluate_fn(model: str, step: int, run_dir: Path = run_dir) -> dict[str, Any]:
                result = evaluate(model, suites, data_dir, run_dir / "eval" / f"step{step}", max_new_tokens=tokens)
                return _eval_record(step, result)

            callback = PeriodicEval(run_dir, plan.base.ablation.eval_every, config.trainer.max_steps, evaluate_fn)
            fit(config, resume=resume, reward_fn=reward_fn, callbacks=[callback])
            result = {"arm": arm, "seed": seed, "overrides": plan.arms[arm],
                      "evals": _read_jsonl(run_dir / "evals.jsonl"), "train": _read_jsonl(run_dir / "train.jsonl")}
            (run_dir / "result.json").write_text(json.dumps(result) + "\n")
            if not keep_checkpoints:  # finished: result.json and final/ stay; only the restart state goes
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            path = write_summary(plan)
            if after_arm is not None:
                after_arm(path)
    return write_summary(plan)


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------


def _metric(record: dict[str, Any], suite: str, key: str) -> float | None:
    value = record["summary"].get(suite, {}).get(key)
    return None if value is None else float(value)


def _spread(values: list[float], items: dict[str, list[float | None]] | None, key: str) -> dict[str, Any] | None:
    """Mean over seeds with a t interval; one seed: the Wilson interval over that seed's items."""
    if not values:
        return None
    if len(values) > 1 or items is None:
        return {**mean_interval(values).to_dict(), "over": "seeds"}
    cell = interval_cells(items).get(key)
    if cell is None:
        return {**mean_interval(values).to_dict(), "over": "seeds"}
    return {**cell.to_dict(), "value": values[0], "over": "items"}


def summarize(plan: Plan) -> dict[str, Any]:
    """``ablation.json``'s content from the finished arms' ``result.json`` files (pure reading)."""
    start = _read_jsonl(plan.out / "start" / "evals.jsonl")
    results = {arm: [json.loads(p.read_text()) for s in range(plan.seeds)
                     if (p := plan.run_dir(arm, s) / "result.json").is_file()] for arm in plan.arms}
    suites = plan.base.ablation.suites
    arms: dict[str, Any] = {}
    finals: dict[str, dict[str, list[float]]] = {}  # arm -> suite -> per-item score averaged over seeds
    for arm, runs in results.items():
        if not runs:
            continue
        final = [r["evals"][-1] for r in runs]
        row: dict[str, Any] = {"seeds": len(runs), "overrides": plan.arms[arm], "final_step": final[0]["step"]}
        for suite in suites:
            keys = HELDOUT_METRICS if suite == "heldout" else ("accuracy",)
            for key in keys:
                values = [v for f in final if (v := _metric(f, suite, key)) is not None]
                row[f"{suite}/{key}"] = _spread(values, final[0]["items"].get(suite), key)
            primary = "exact_match" if suite == "heldout" else "accuracy"
            best = [max(v for e in r["evals"] if (v := _metric(e, suite, primary)) is not None) for r in runs]
            row[f"{suite}/best_{primary}"] = {**mean_interval(best).to_dict(), "over": "seeds"}
            per_item = [f["items"][suite]["accuracy"] for f in final]
            finals.setdefault(arm, {})[suite] = [sum(col) / len(col) for col in zip(*per_item)]
        curve: dict[int, list[float]] = {}
        for r in runs:
            for e in ([*start, *r["evals"]]):
                curve.setdefault(e["step"], []).append(_metric(e, suites[0], "exact_match" if suites[0] == "heldout"
                                                               else "accuracy"))
        reward: dict[int, list[float]] = {}
        for r in runs:
            for t in r["train"]:
                reward.setdefault(t["step"], []).append(t["reward"])
        row["curve"] = {str(s): sum(v) / len(v) for s, v in sorted(curve.items())}
        row["train_reward"] = {str(s): sum(v) / len(v) for s, v in sorted(reward.items())}
        arms[arm] = row
    base = plan.baseline
    for arm, row in arms.items():
        for suite in suites:
            if start:  # what the training did: the arm's final model against the shared start, item by item
                row[f"{suite}/paired_vs_start"] = paired_difference(
                    finals[arm][suite], start[0]["items"][suite]["accuracy"]).to_dict()
            if arm != base and base in finals:
                row[f"{suite}/paired_vs_{base}"] = paired_difference(finals[arm][suite], finals[base][suite]).to_dict()
    return {"baseline": base, "seeds": plan.seeds, "suites": suites,
            "max_steps": plan.base.trainer.max_steps, "eval_every": plan.base.ablation.eval_every,
            "start": start[0]["summary"] if start else None, "arms": arms,
            "unfinished": [a for a in plan.arms if a not in arms]}


def write_summary(plan: Plan) -> Path:
    """Write ``ablation.json``, ``ablation.md`` and the curves from what has finished; returns the JSON's path."""
    summary = summarize(plan)
    path = plan.out / "ablation.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    (plan.out / "ablation.md").write_text(markdown(summary))
    if summary["arms"]:
        plot_curves(summary, plan.out)
    return path


__all__ = ["BASELINE", "DEFAULT_ARMS", "Plan", "evaluate", "interval_cells", "item_scores", "make_plan",
           "markdown", "paired_cell", "param_f1", "parse_arm", "plot_curves", "run_ablation", "summarize",
           "write_summary"]
