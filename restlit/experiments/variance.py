"""``restlit diagnose variance``: how noisy is the policy gradient under each token weighting?

At a fixed checkpoint and fixed prompts (the first training step's), draw ``K`` independent
rollout batches (different sampling seeds). On the *same* samples compute the policy-gradient
estimate ``g^m_k`` of batch ``k`` under each weighting ``m`` in (uniform, static, entropy, top-entropy): the
gradient of the training loss (:func:`restlit.objective.policy_loss` with
:func:`restlit.objective.token_weights`, through the module's packed group forward) at ratio 1,
i.e. ``g = -(1/D) sum_t w_t A_t grad log pi(a_t)``. Then, per weighting (the math, pure functions:
:mod:`restlit.experiments.variance_math`):

- the estimator's relative variance ``E||g_k - mean g||^2 / ||mean g||^2``
  (:func:`relative_variance`), with a percentile bootstrap interval over the ``K`` batches
  (:func:`bootstrap_relative_variance`; the same resampled batches for every weighting, so the
  ratio to uniform gets an interval too);
- the same quantity estimated prompt by prompt (:func:`stratified_relative_variance`): a batch's
  gradient is the sum of its prompts' parts ``g_k = sum_p g_pk``, each prompt's completions are
  drawn independently of the others', so ``Var g = sum_p Var g_p`` and each ``Var g_p`` is
  estimated from its own ``K`` draws. It estimates the same number as the plain one (to the
  extent that the parts are independent: they share the batch's loss denominator and, for the
  entropy weightings, its region entropy statistics) with the
  between-prompt cross products, which only add noise, left out: with ``P`` prompts of similar
  variance its interval is up to ``sqrt(P)`` times narrower for the same batches;
- the cosine between the weightings' mean gradients (:func:`mean_cosine`): do they point the
  same way?
- the paper's bound ``sum_t w_t^2 (1 - exp(-H_t))`` per region and in total
  (:func:`variance_bound`), averaged over the batches.

Memory is bounded by a fixed random projection: each gradient (of every trainable parameter, or
of those whose name contains one of ``params``) is reduced to ``sketch_dim`` numbers by a seeded
count sketch (:class:`CountSketch`; inner products are preserved in expectation, with a relative
error about ``sqrt(2 / sketch_dim)``, 0.6% at the default 65,536). Only the sketches are kept,
one per weighting, batch and prompt, and their sum per batch; the sketch's bucket codes cost 4
bytes per parameter. ``sketch_dim = 0`` keeps the exact flattened gradients instead (8 bytes per
parameter for each of them: for small models or a named subset).

Each finished batch can be kept in a ``store`` directory (its sketches, bounds and reward, with
the settings that produced it): batch ``k``'s sampling seed depends only on ``k``, so a later call
with more ``batches`` measures only the new ones, and the report equals one call with them all.
A stopped run loses at most the batch under way. The same makes the batches shardable: calls
with ``shard = (i, n)`` measure the batches ``k % n == i`` side by side into one store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from restlit.errors import UserError
from restlit.experiments.variance_math import (
    CountSketch,
    bootstrap_ratio,
    bootstrap_relative_variance,
    gradient_variance,
    gram_relative_variance,
    mean_cosine,
    part_variances,
    stratified_relative_variance,
    variance_bound,
)
from restlit.objective import NUM_REGIONS
from restlit.regions import Region
from restlit.runtime.outputs import atomic_write, atomic_write_text

WEIGHTINGS = ("uniform", "static", "entropy", "top-entropy")


def _module_adapter(config: Any, policy: Any, tokenizer: Any, reward_fn: Any = None):
    """The diagnostic's use of :class:`restlit.training.module.RestModule`, through its public steps (the
    training step's rollout engine, ``score``, ``make_groups``, ``group_logprobs``). Returns
    ``sample(batch, seed, step) -> (groups, metrics)``, the groups' tensors with regions,
    advantages and the engine's entropies, and ``logp(group) -> (logp, entropy)`` with gradient."""
    from restlit.objective import grpo_advantages
    from restlit.training.module import RestModule

    module = RestModule(config, policy, tokenizer, reward_fn=reward_fn)
    module.on_fit_start()  # builds the configured rollout engine on this very policy
    r = config.rollout

    def sample(batch: list, seed: int, step: int) -> tuple[list, dict[str, float]]:
        out = module.engine.generate([item.prompt_ids for item in batch], r.sampling(seed))
        rewards, metrics = module.score(batch, out, step)
        advantages = grpo_advantages(rewards, torch.arange(len(batch)).repeat_interleave(r.n),
                                     config.objective.advantage_scaling)
        groups = module.make_groups(batch, out, advantages)
        for g in groups:
            if g.entropy is None:
                with torch.no_grad():
                    _, g.entropy = module.group_logprobs(policy, g)
        return groups, metrics

    return sample, lambda group: module.group_logprobs(policy, group)


def _batch_file(store: Path, k: int) -> Path:
    return store / f"batch-{k:05d}.pt"


def _settings_key(config: Any, prompts: list[str], names: list[str], sketch_dim: int, params: Sequence[str],
                  step: int, progress: float, reward_fn: Any) -> str:
    """Everything a stored batch's numbers depend on, as JSON: the model (its section, less
    ``gradient_checkpointing``, which changes only time and memory, and the size and time of each
    file of a local checkpoint directory), the prompts, sampling, objective, reward and format."""
    model = {k: v for k, v in dataclasses.asdict(config.model).items() if k != "gradient_checkpointing"}
    where = Path(config.model.path)
    files = {f.name: [(st := f.stat()).st_size, st.st_mtime_ns] for f in sorted(where.iterdir()) if f.is_file()} \
        if where.is_dir() else None
    function = None if reward_fn is None else \
        f"{getattr(reward_fn, '__module__', '?')}:{getattr(reward_fn, '__qualname__', reward_fn)}"
    return json.dumps({"model": model, "checkpoint_files": files, "seed": config.trainer.seed, "prompts": prompts,
                       "rollout": dataclasses.asdict(config.rollout), "objective": dataclasses.asdict(config.objective),
                       "reward": dataclasses.asdict(config.reward), "reward_fn": function,
                       "tool_format": config.data.tool_format, "weightings": names, "sketch_dim": sketch_dim,
                       "params": list(params), "step": step, "progress": progress}, default=str)


def _first_difference(ours: Any, theirs: Any, where: str = "") -> str:
    """The dotted name of the first setting where two settings keys differ."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in [*ours, *(k for k in theirs if k not in ours)]:
            if ours.get(k) != theirs.get(k):
                return _first_difference(ours.get(k), theirs.get(k), f"{where}.{k}" if where else k)
    return where or "settings"


def _load_batch(store: Path, k: int, key: str) -> dict[str, Any] | None:
    """Batch ``k`` from ``store`` if it was measured; UserError if unreadable or measured with
    other settings than ``key``."""
    path = _batch_file(store, k)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        stored_key = saved["key"]
        json.loads(stored_key)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or hand-edited: any reason is one line
        raise UserError(f"{path}: not a measured batch ({type(exc).__name__}: {str(exc)[:120]}); move it away "
                        "or start over") from None
    if stored_key != key:
        field = _first_difference(json.loads(key), json.loads(stored_key))
        raise UserError(f"{path}: measured with another {field} than this run's; measure into another directory, "
                        "or start over")
    return saved


def _save_batch(store: Path, k: int, key: str, batch: dict[str, Any]) -> None:
    """Write batch ``k`` whole or not at all (a stop during the write leaves no file)."""
    store.mkdir(parents=True, exist_ok=True)
    with atomic_write(_batch_file(store, k)) as f:
        torch.save(batch | {"key": key}, f)


def stored_batches(store: Path, below: int | None = None) -> int:
    """How many measured batches ``store`` holds (only those numbered under ``below`` when given)."""
    if not store.is_dir():
        return 0
    numbers = [int(p.stem.split("-")[1]) for p in store.glob("batch-[0-9]*.pt")]
    return sum(1 for n in numbers if below is None or n < below)


def measure_variance(config: Any, *, batches: int = 8, sketch_dim: int = 1 << 16, params: Sequence[str] = (),
                     step: int = 1, progress: float = 0.0, n_boot: int = 1000, reward_fn: Any = None,
                     weightings: Sequence[str] = WEIGHTINGS, store: Path | None = None, restart: bool = False,
                     shard: tuple[int, int] | None = None, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Run the diagnostic (module docstring) with ``config`` (its ``model.path`` is the checkpoint);
    the weights see training step ``step`` (static ramp, reward schedule) and curriculum progress
    ``progress``. ``weightings`` (a subset of :data:`WEIGHTINGS` that holds ``uniform``, the
    reference of the ratios) are measured: each costs one backward pass per group and batch.
    With ``store``, batches already kept there (with the same settings) are read, not measured,
    and each new one is kept as soon as it is done; ``restart`` deletes the stored ones first
    (once the settings are checked). Returns the report as plain data.

    With ``shard = (i, n)`` (and a ``store``) the call measures only the batches ``k`` with
    ``k % n == i`` that the store lacks, and returns None: ``n`` such calls split the batches over
    processes or machines sharing the store (a batch's numbers depend only on ``k``), then one call
    without a shard reads them all and reports."""
    from restlit.training.data import StepBatches, ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy

    if batches < 2:
        raise UserError(f"--batches must be >= 2, got {batches}")
    unknown = [m for m in weightings if m not in WEIGHTINGS]
    if unknown or "uniform" not in weightings:
        raise UserError(f"--weightings {' '.join(weightings)}: give uniform (the reference) and any of "
                        f"{', '.join(WEIGHTINGS[1:])}" + (f"; unknown: {unknown[0]}" if unknown else ""))
    if shard is not None and (store is None or restart or not 0 <= shard[0] < shard[1]):
        raise UserError(f"--shard {shard[0]}/{shard[1]}: give I/N with 0 <= I < N, a store of batches to share and "
                        "no --overwrite (another shard may be using them)")
    names = [m for m in WEIGHTINGS if m in weightings]  # uniform first: the ratios' reference
    config = dataclasses.replace(config, rollout=dataclasses.replace(config.rollout, engine="hf"))
    torch.manual_seed(config.trainer.seed)
    tokenizer, policy = build_tokenizer_and_policy(config)
    policy.train()
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad and (not params or any(s in n for s in params))]
    if not named:
        raise UserError(f"--params {' '.join(params)}: no trainable parameter name contains any of them")
    tensors = [p for _, p in named]
    sketch = CountSketch([p.numel() for p in tensors], sketch_dim, seed=config.trainer.seed)
    data = ToolUseDataModule(config.data, tokenizer, config.trainer.prompts_per_step)
    data.prepare_data()
    data.setup("fit")
    batch = StepBatches(data.train_items, config.trainer.prompts_per_step, 1, 0, config.data.seed).batch(0)
    sample, logp_fn = _module_adapter(config, policy, tokenizer, reward_fn)
    key = _settings_key(config, [item.id for item in batch], names, sketch_dim, params, step, progress, reward_fn)
    if restart and store is not None:
        shutil.rmtree(store, ignore_errors=True)
    rows: dict[str, list[Tensor]] = {m: [] for m in names}
    parts: dict[str, list[Tensor]] | None = {m: [] for m in names}  # None once a stored batch lacks them
    bounds: dict[str, list[Tensor]] = {m: [] for m in names}
    rewards: list[float] = []
    active = 0  # batches with a non-zero gradient (some prompt's completions got different rewards)
    for k in range(batches):
        if shard is not None and k % shard[1] != shard[0]:
            continue
        done = _load_batch(store, k, key) if store is not None else None
        if done is None:
            done = _measure_batch(k, config, batch, sample, logp_fn, sketch, tensors, names, step, progress)
            if store is not None:
                _save_batch(store, k, key, done)
            log(f"batch {k + 1}/{batches}: reward {done['reward']:.3f}")
        if parts is not None and "parts" not in done:  # kept by a version that stored batch totals only
            parts = None
        for m in names:
            rows[m].append(done["rows"][m])
            bounds[m].append(done["bounds"][m])
            if parts is not None:
                parts[m].append(done["parts"][m])
        rewards.append(done["reward"])
        active += done["active"]
    if shard is not None:
        return None
    return variance_report(rows, bounds, parts=parts, n_boot=n_boot, seed=config.trainer.seed) | {
        "batches": batches, "prompts": [item.id for item in batch], "completions_per_prompt": config.rollout.n,
        "max_new_tokens": config.rollout.max_new_tokens, "step": step, "progress": progress,
        "checkpoint": config.model.path, "sketch_dim": sketch_dim, "parameters": sum(t.numel() for t in tensors),
        "parameter_filter": list(params), "mean_reward": sum(rewards) / len(rewards), "batches_with_gradient": active}


def _measure_batch(k: int, config: Any, batch: list, sample: Callable, logp_fn: Callable, sketch: CountSketch,
                   tensors: list[Tensor], names: list[str], step: int, progress: float) -> dict[str, Any]:
    """Batch ``k`` of :func:`measure_variance`: its sampling seed depends only on ``k``. Returns each
    weighting's gradient sketch (``rows``), its parts, one per prompt (``parts``, ``[P, D]``; they
    sum to ``rows``), and bound, the batch's mean reward and whether any group had a gradient
    (``active``)."""
    from restlit.objective import (
        loss_denominator,
        policy_loss,
        region_entropy_stats,
        token_weights,
        top_entropy_threshold,
    )

    obj = config.objective
    max_len = obj.loss.max_len or config.rollout.max_new_tokens
    seed = (config.trainer.seed * 1_000_003 + 7_919 * (k + 1)) * 65_537
    torch.manual_seed(seed % (1 << 63))  # dropout, if the model has any, draws the same in any call
    groups, metrics = sample(batch, seed, step)
    stats = sum(region_entropy_stats(g.entropy, g.regions, g.mask) for g in groups)
    tau = top_entropy_threshold([g.entropy for g in groups], [g.mask for g in groups],
                                obj.weights.top_entropy_quantile)
    weights = {m: [token_weights(g.regions, g.mask, dataclasses.replace(obj.weights, mode=m), region_stats=stats,
                                 progress=progress, step=step, entropy=g.entropy, threshold=tau) for g in groups]
               for m in names}
    denoms = {m: sum(loss_denominator(g.mask, w, obj.loss.aggregation, max_len) for g, w in zip(groups, ws))
              for m, ws in weights.items()}
    dim = sketch.dim or sum(t.numel() for t in tensors)
    parts = {m: torch.zeros(len(groups), dim, dtype=torch.float64) for m in names}  # one row per prompt
    active = False
    for i, g in enumerate(groups):
        if not bool((g.advantages != 0).any()) or float(g.mask.sum()) == 0:
            continue  # this group's gradient is exactly zero under every weighting
        active = True
        logp, _ = logp_fn(g)
        for j, m in enumerate(names):
            loss, _ = policy_loss(logp, logp.detach(), g.advantages, g.mask, weights[m][i], config=obj.loss,
                                  denominator=denoms[m])
            grads = torch.autograd.grad(loss, tensors, retain_graph=j < len(names) - 1, allow_unused=True)
            parts[m][i] = sketch(grads)
    return {"rows": {m: parts[m].sum(0) for m in names}, "parts": parts,
            "bounds": {m: sum(variance_bound(w, g.entropy, g.regions, g.mask) for g, w in zip(groups, weights[m]))
                       for m in names},
            "reward": float(metrics["reward/total"]), "active": active}


def variance_report(rows: dict[str, list[Tensor]], bounds: dict[str, list[Tensor]], *, n_boot: int = 1000,
                    seed: int = 0, parts: dict[str, list[Tensor]] | None = None) -> dict[str, Any]:
    """The numbers of the report from each weighting's ``K`` gradient sketches and per-batch bounds;
    with ``parts`` (each batch's ``[P, D]`` per-prompt sketches) also the estimate by prompt."""
    from restlit.stats import mean_interval

    names = list(rows)
    stacked = torch.stack([torch.stack(rows[m]) for m in names])  # [M, K, D]
    m_count, k = stacked.shape[:2]
    flat = stacked.reshape(m_count * k, -1)
    gram = flat @ flat.T
    block = {m: gram[i * k:(i + 1) * k, i * k:(i + 1) * k] for i, m in enumerate(names)}
    cis = bootstrap_relative_variance([block[m] for m in names], n_boot=n_boot, seed=seed)
    ratio_cis = bootstrap_ratio([block[m] for m in names], reference=0, n_boot=n_boot, seed=seed)
    rel = {m: float(gram_relative_variance(block[m])) for m in names}
    out: dict[str, Any] = {"weightings": {}, "cosine": {}}
    for i, m in enumerate(names):
        b = torch.stack(bounds[m])  # [K, R + 1]
        out["weightings"][m] = {
            "relative_variance": rel[m], "relative_variance_ci": list(cis[i]),
            "ratio_to_" + names[0]: _ratio(rel[m], rel[names[0]]),
            "ratio_ci": list(ratio_cis[i]),
            "variance": float(gradient_variance(block[m].diagonal().sum(), block[m].sum(), k)),
            "mean_gradient_norm": float(block[m].sum().clamp_min(0).sqrt() / k),
            "bound": {region.name: mean_interval(b[:, int(region)].tolist()).to_dict() for region in Region}
            | {"total": mean_interval(b[:, NUM_REGIONS].tolist()).to_dict()},
        }
    if parts is not None:
        part_grams = {}
        for m in names:
            x = torch.stack(parts[m]).transpose(0, 1)  # [P, K, D]
            part_grams[m] = x @ x.transpose(1, 2)
        grams, pgrams = [block[m] for m in names], [part_grams[m] for m in names]
        by_prompt = {m: float(stratified_relative_variance(block[m], part_grams[m])) for m in names}
        cis = bootstrap_relative_variance(grams, n_boot=n_boot, seed=seed, parts=pgrams)
        ratio_cis = bootstrap_ratio(grams, reference=0, n_boot=n_boot, seed=seed, parts=pgrams)
        per_prompt = {m: part_variances(part_grams[m]) for m in names}
        for i, m in enumerate(names):
            v, ref = per_prompt[m], per_prompt[names[0]]
            out["weightings"][m]["by_prompt"] = {
                "relative_variance": by_prompt[m], "relative_variance_ci": list(cis[i]),
                "ratio_to_" + names[0]: _ratio(by_prompt[m], by_prompt[names[0]]),
                "ratio_ci": list(ratio_cis[i]), "variance": float(v.sum()),
                "prompt_variance": v.tolist(), "prompt_share": (v / v.sum()).tolist() if v.sum() > 0 else None,
                "prompt_ratio_to_" + names[0]: [_ratio(a, b) for a, b in zip(v.tolist(), ref.tolist())]}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j > i:
                cross = gram[i * k:(i + 1) * k, j * k:(j + 1) * k]
                out["cosine"][f"{a}/{b}"] = float(mean_cosine(cross, block[a], block[b]))
    return out


def _ratio(a: float, b: float) -> float:
    """``a / b``; ``inf`` for ``a > 0 = b``, ``nan`` for ``0 / 0`` (a prompt with no spread under either)."""
    return a / b if b > 0 else (math.inf if a > 0 else math.nan)


def _g(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def _prompt_table(report: dict[str, Any], names: list[str]) -> list[str]:
    """Each prompt's variance under each weighting, its share of the weighting's total and its
    ratio to the reference's (point estimates; the rows sum to the by-prompt variance)."""
    ref, by = names[0], {m: report["weightings"][m]["by_prompt"] for m in names}
    if any("prompt_variance" not in b for b in by.values()):
        return []
    lines = ["", "Variance prompt by prompt (share of the weighting's total; ratio to " + ref + "):", "",
             "| prompt | " + " | ".join(names) + " | " + " | ".join(f"{m} / {ref}" for m in names[1:]) + " |",
             "|---|" + "---|" * (2 * len(names) - 1)]
    for p, prompt in enumerate(report["prompts"]):
        shares = {m: by[m]["prompt_share"][p] * 100 if by[m]["prompt_share"] else None for m in names}
        cells = [f"{_g(by[m]['prompt_variance'][p])} ({_g(shares[m], '.0f')}%)" for m in names]
        cells += [_g(by[m]["prompt_ratio_to_" + ref][p], ".2f") for m in names[1:]]
        lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables ("-" where a number is undefined, e.g. no advantage in any batch)."""
    names = list(report["weightings"])
    ref = names[0]
    lines = ["| weighting | relative variance [95% bootstrap] | ratio to " + ref + " [95%] | variance E‖g - Eg‖² "
             "| mean gradient norm | bound sum w^2 (1 - exp(-H)) [95% over batches] |", "|---|---|---|---|---|---|"]
    for m in names:
        w = report["weightings"][m]
        lo, hi = w["relative_variance_ci"]
        rlo, rhi = w["ratio_ci"]
        t = w["bound"]["total"]
        lines.append(f"| {m} | {_g(w['relative_variance'])} [{_g(lo)}, {_g(hi)}] | {_g(w['ratio_to_' + ref], '.3f')} "
                     f"[{_g(rlo, '.3f')}, {_g(rhi, '.3f')}] | {_g(w.get('variance'))} | {_g(w['mean_gradient_norm'])} | {t['value']:.1f} "
                     f"[{t['low']:.1f}, {t['high']:.1f}] |")
    if all("by_prompt" in report["weightings"][m] for m in names):
        lines += ["", ("Estimated prompt by prompt (the batch's prompts as independent parts, cross products left "
                       "out: the same quantity, less noise):"), "",
                  f"| weighting | relative variance [95% bootstrap] | ratio to {ref} [95%] |", "|---|---|---|"]
        for m in names:
            w = report["weightings"][m]["by_prompt"]
            lo, hi = w["relative_variance_ci"]
            rlo, rhi = w["ratio_ci"]
            lines.append(f"| {m} | {_g(w['relative_variance'])} [{_g(lo)}, {_g(hi)}] | "
                         f"{_g(w['ratio_to_' + ref], '.3f')} [{_g(rlo, '.3f')}, {_g(rhi, '.3f')}] |")
        lines += _prompt_table(report, names)
    regions = [r.name for r in Region]
    lines += ["", "Bound per region (mean over batches):", "",
              "| weighting | " + " | ".join(regions) + " |", "|---|" + "---|" * len(regions)]
    for m in names:
        b = report["weightings"][m]["bound"]
        lines.append(f"| {m} | " + " | ".join(f"{b[r]['value']:.2f}" for r in regions) + " |")
    lines += ["", "Cosine between mean gradients: " + ", ".join(f"{k} {v:.3f}" for k, v in report["cosine"].items())]
    lines += ["", (f"{report['batches']} rollout batches of {len(report['prompts'])} prompts x "
                   f"{report['completions_per_prompt']} completions (up to {report['max_new_tokens']} tokens) at "
                   f"{report['checkpoint']}; gradients of {report['parameters']:,} parameters"
                   + (f", count-sketched to {report['sketch_dim']:,} numbers" if report["sketch_dim"] else ", exact")
                   + f"; mean reward {report['mean_reward']:.3f}.")]
    if 0 < report.get("batches_with_gradient", report["batches"]) < report["batches"]:
        lines += ["", (f"Only {report['batches_with_gradient']} of {report['batches']} batches had an advantage (in the "
                       "others every prompt's completions got equal rewards: a zero gradient). With one such batch "
                       "the relative variance is exactly K whatever the weighting: take more batches.")]
    if not report["weightings"][ref]["mean_gradient_norm"]:
        lines += ["", "No batch had an advantage (every prompt's completions got equal rewards): no gradient to measure."]
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """The report with every non-finite number as None (JSON has no inf / nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_report(report: dict[str, Any], out: Path, *, overwrite: bool = False) -> Path:
    """``out/variance.json`` and ``out/variance.md``; refuses to replace them without ``overwrite``."""
    path = out / "variance.json"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite or choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_finite(report), indent=1) + "\n")
    atomic_write_text(out / "variance.md", markdown(report))
    return path


__all__ = ["WEIGHTINGS", "markdown", "measure_variance", "stored_batches", "variance_report", "write_report"]
