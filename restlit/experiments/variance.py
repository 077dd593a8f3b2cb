"""``restlit diagnose variance``: how noisy is the policy gradient under each token weighting?

At a fixed checkpoint and fixed prompts (the first training step's), draw ``K`` independent
rollout batches (different sampling seeds). On the *same* samples compute the policy-gradient
estimate ``g^m_k`` of batch ``k`` under each weighting ``m`` in (uniform, static, entropy, top-entropy): the
gradient of the training loss (:func:`restlit.objective.policy_loss` with
:func:`restlit.objective.token_weights`, through the module's packed group forward) at ratio 1,
i.e. ``g = -(1/D) sum_t w_t A_t grad log pi(a_t)``. Then, per weighting:

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
A stopped run loses at most the batch under way.
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
from restlit.objective import NUM_REGIONS
from restlit.regions import Region
from restlit.runtime.outputs import atomic_write, atomic_write_text

WEIGHTINGS = ("uniform", "static", "entropy", "top-entropy")


# ------------------------------------------------------------------------------------------------
# The math: pure functions
# ------------------------------------------------------------------------------------------------


def relative_variance(trace: Tensor | float, total: Tensor | float, k: int) -> Tensor:
    """Relative variance of ``K`` vector estimates from their running moments.

    With ``trace = sum_k ||g_k||^2`` and ``total = ||sum_k g_k||^2`` (so ``mean g = sum_k g_k / K``)::

        ||mean g||^2                           = total / K^2
        V = 1/(K-1) sum_k ||g_k - mean g||^2   = (trace - total / K) / (K - 1)
        relative variance                      = V / ||mean g||^2

    (``V`` is unbiased for ``E||g - E g||^2``; ``||mean g||^2`` overestimates ``||E g||^2`` by
    ``V / K``.) Float64; ``inf`` when the mean gradient is 0.
    """
    var = gradient_variance(trace, total, k)
    mean_sq = torch.as_tensor(total, dtype=torch.float64) / (k * k)
    return torch.where(mean_sq > 0, var / mean_sq.clamp_min(1e-300), torch.full_like(var, math.inf))


def gradient_variance(trace: Tensor | float, total: Tensor | float, k: int) -> Tensor:
    """``V = 1/(K-1) sum_k ||g_k - mean g||^2 = (trace - total / K) / (K - 1)`` from the running
    moments ``trace = sum_k ||g_k||^2``, ``total = ||sum_k g_k||^2`` (float64)."""
    if k < 2:
        raise ValueError(f"a variance needs at least 2 estimates, got {k}")
    trace = torch.as_tensor(trace, dtype=torch.float64)
    total = torch.as_tensor(total, dtype=torch.float64)
    return (trace - total / k) / (k - 1)


def gram_relative_variance(gram: Tensor) -> Tensor:
    """:func:`relative_variance` from the ``[K, K]`` Gram matrix ``G_ij = <g_i, g_j>``:
    ``trace = sum_k G_kk``, ``total = sum_ij G_ij``."""
    return relative_variance(gram.diagonal().sum(), gram.sum(), gram.shape[0])


def stratified_relative_variance(gram: Tensor, parts: Tensor) -> Tensor:
    """Relative variance of ``K`` estimates ``g_k = sum_p g_pk`` whose ``P`` parts are drawn
    independently of each other, from the ``[K, K]`` Gram matrix ``G`` of the totals and the
    ``[P, K, K]`` Gram matrices ``G_p`` of each part's ``K`` draws::

        V_p                 = (tr G_p - sum G_p / K) / (K - 1)     (part p's unbiased variance)
        V                   = sum_p V_p                            (independent parts: Var sum = sum Var)
        ||mean g||^2        = sum G / K^2
        relative variance   = V / ||mean g||^2

    With ``P = 1`` it is :func:`gram_relative_variance`. Float64; ``inf`` when the mean is 0."""
    k = gram.shape[0]
    var = gradient_variance(parts.diagonal(dim1=-2, dim2=-1).sum(-1), parts.sum((-2, -1)), k).sum()
    mean_sq = gram.sum().to(torch.float64) / (k * k)
    return torch.where(mean_sq > 0, var / mean_sq.clamp_min(1e-300), torch.full_like(var, math.inf))


def mean_cosine(cross: Tensor, gram_a: Tensor, gram_b: Tensor) -> Tensor:
    """Cosine between the mean gradients of two weightings on the same ``K`` batches::

        cos = <sum_i a_i, sum_j b_j> / (||sum a|| ||sum b||) = sum C / sqrt(sum G_a * sum G_b)

    with ``C_ij = <a_i, b_j>``, ``G_a``, ``G_b`` the Gram matrices (all ``[K, K]``); 0 for a zero mean."""
    den = (gram_a.sum() * gram_b.sum()).clamp_min(0).sqrt()
    return torch.where(den > 0, cross.sum() / den.clamp_min(1e-300), torch.zeros_like(den))


def _resampled(gram: Tensor, parts: Tensor | None, idx: Tensor) -> float:
    """The relative variance of the batches ``idx`` (plain, or by part when ``parts`` is given)."""
    if parts is None:
        return float(gram_relative_variance(gram[idx][:, idx]))
    return float(stratified_relative_variance(gram[idx][:, idx], parts[:, idx][:, :, idx]))


def bootstrap_relative_variance(grams: Sequence[Tensor], n_boot: int = 1000, seed: int = 0,
                                level: float = 0.95, parts: Sequence[Tensor] | None = None) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of :func:`gram_relative_variance` for several ``[K, K]`` Gram
    matrices over the same batches: each resample draws ``K`` batch indices with replacement and
    uses them for every matrix (``G[idx][:, idx]``). Returns ``(low, high)`` per matrix. With
    ``parts`` (each matrix's ``[P, K, K]`` part Grams), of :func:`stratified_relative_variance`."""
    k = grams[0].shape[0]
    g = torch.Generator().manual_seed(seed)
    draws = [[] for _ in grams]
    parts = parts or [None] * len(grams)
    for _ in range(n_boot):
        idx = torch.randint(k, (k,), generator=g)
        if idx.unique().numel() < 2:  # all-equal resample: no spread to measure
            continue
        for out, gram, part in zip(draws, grams, parts):
            out.append(_resampled(gram, part, idx))
    alpha = (1 - level) / 2
    return [(_quantile(d, alpha), _quantile(d, 1 - alpha)) for d in draws]


def bootstrap_ratio(grams: Sequence[Tensor], reference: int = 0, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, parts: Sequence[Tensor] | None = None) -> list[tuple[float, float]]:
    """Percentile bootstrap interval of each matrix's relative variance divided by the
    ``reference`` matrix's, same resamples for both (a paired ratio); by part with ``parts``."""
    k = grams[0].shape[0]
    g = torch.Generator().manual_seed(seed)
    draws = [[] for _ in grams]
    parts = parts or [None] * len(grams)
    for _ in range(n_boot):
        idx = torch.randint(k, (k,), generator=g)
        if idx.unique().numel() < 2:
            continue
        ref = _resampled(grams[reference], parts[reference], idx)
        for out, gram, part in zip(draws, grams, parts):
            out.append(_resampled(gram, part, idx) / ref if ref > 0 else math.inf)
    alpha = (1 - level) / 2
    return [(_quantile(d, alpha), _quantile(d, 1 - alpha)) for d in draws]


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def variance_bound(weights: Tensor, entropy: Tensor, regions: Tensor, mask: Tensor) -> Tensor:
    """The paper's variance bound of a weighted policy gradient, per region and in total, ``[R + 1]`` float64::

        b_r = sum_t m_t w_t^2 (1 - exp(-H_t)) [region_t = r],      b_total = sum_r b_r

    ``1 - exp(-H_t)`` bounds the expected squared norm of token ``t``'s score with respect to its
    logits, ``E||onehot(a) - p||^2 = 1 - sum_a p_a^2``, since ``sum_a p_a^2 = E_p[p] >= exp(E_p log p)
    = exp(-H)`` (Jensen). Low-entropy tokens contribute little however large their weight."""
    m = mask.reshape(-1).to(torch.float64)
    per_token = weights.reshape(-1).to(torch.float64) ** 2 * (1 - torch.exp(-entropy.reshape(-1).to(torch.float64)))
    out = torch.zeros(NUM_REGIONS + 1, dtype=torch.float64)
    out[:NUM_REGIONS].index_add_(0, regions.reshape(-1).long().cpu(), (per_token * m).cpu())
    out[NUM_REGIONS] = out[:NUM_REGIONS].sum()
    return out


class CountSketch:
    """A fixed random projection of a list of tensors (shapes ``sizes``) to ``dim`` numbers::

        S(x)_j = sum_{i : h(i) = j} s(i) x_i,      h(i) uniform in [0, dim), s(i) = +-1 (seeded)

    ``E <S x, S y> = <x, y>`` and ``Var <S x, S y> <= (||x||^2 ||y||^2 + <x, y>^2) / dim``. One int32
    code per coordinate (``h + dim [s < 0]``) is drawn once. ``dim = 0``: no projection (the
    flattened float64 vector)."""

    def __init__(self, sizes: Sequence[int], dim: int, seed: int = 0):
        self.dim = dim
        self.codes: list[Tensor] = []
        if dim:
            g = torch.Generator().manual_seed(seed)
            self.codes = [torch.randint(2 * dim, (n,), generator=g, dtype=torch.int32) for n in sizes]

    def __call__(self, tensors: Sequence[Tensor | None]) -> Tensor:
        if not self.dim:
            return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        acc = torch.zeros(2 * self.dim, dtype=torch.float64)
        for t, code in zip(tensors, self.codes):
            if t is not None:
                acc.index_add_(0, code, t.detach().reshape(-1).to("cpu", torch.float64))
        return acc[: self.dim] - acc[self.dim :]


# ------------------------------------------------------------------------------------------------
# The measurement
# ------------------------------------------------------------------------------------------------


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
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the diagnostic (module docstring) with ``config`` (its ``model.path`` is the checkpoint);
    the weights see training step ``step`` (static ramp, reward schedule) and curriculum progress
    ``progress``. ``weightings`` (a subset of :data:`WEIGHTINGS` that holds ``uniform``, the
    reference of the ratios) are measured: each costs one backward pass per group and batch.
    With ``store``, batches already kept there (with the same settings) are read, not measured,
    and each new one is kept as soon as it is done; ``restart`` deletes the stored ones first
    (once the settings are checked). Returns the report as plain data."""
    from restlit.training.data import StepBatches, ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy

    if batches < 2:
        raise UserError(f"--batches must be >= 2, got {batches}")
    unknown = [m for m in weightings if m not in WEIGHTINGS]
    if unknown or "uniform" not in weightings:
        raise UserError(f"--weightings {' '.join(weightings)}: give uniform (the reference) and any of "
                        f"{', '.join(WEIGHTINGS[1:])}" + (f"; unknown: {unknown[0]}" if unknown else ""))
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
            "ratio_to_" + names[0]: rel[m] / rel[names[0]] if rel[names[0]] > 0 else math.inf,
            "ratio_ci": list(ratio_cis[i]),
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
        for i, m in enumerate(names):
            out["weightings"][m]["by_prompt"] = {
                "relative_variance": by_prompt[m], "relative_variance_ci": list(cis[i]),
                "ratio_to_" + names[0]: by_prompt[m] / by_prompt[names[0]] if by_prompt[names[0]] > 0 else math.inf,
                "ratio_ci": list(ratio_cis[i])}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j > i:
                cross = gram[i * k:(i + 1) * k, j * k:(j + 1) * k]
                out["cosine"][f"{a}/{b}"] = float(mean_cosine(cross, block[a], block[b]))
    return out


def _g(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables ("-" where a number is undefined, e.g. no advantage in any batch)."""
    names = list(report["weightings"])
    ref = names[0]
    lines = ["| weighting | relative variance [95% bootstrap] | ratio to " + ref + " [95%] | mean gradient norm "
             "| bound sum w^2 (1 - exp(-H)) [95% over batches] |", "|---|---|---|---|---|"]
    for m in names:
        w = report["weightings"][m]
        lo, hi = w["relative_variance_ci"]
        rlo, rhi = w["ratio_ci"]
        t = w["bound"]["total"]
        lines.append(f"| {m} | {_g(w['relative_variance'])} [{_g(lo)}, {_g(hi)}] | {_g(w['ratio_to_' + ref], '.3f')} "
                     f"[{_g(rlo, '.3f')}, {_g(rhi, '.3f')}] | {_g(w['mean_gradient_norm'])} | {t['value']:.1f} "
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


__all__ = ["WEIGHTINGS", "CountSketch", "bootstrap_ratio", "bootstrap_relative_variance", "gradient_variance",
           "gram_relative_variance",
           "markdown", "mean_cosine", "measure_variance", "relative_variance", "stratified_relative_variance",
           "variance_bound", "variance_report",
           "write_report"]
