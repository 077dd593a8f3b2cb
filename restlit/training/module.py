"""``RestModule``: the LightningModule of ``fit``. It owns the policy, the optional frozen
reference and the rollout engine, and wires the pieces that do the work (manual optimisation: one
counted optimizer step per training step).

A training step ``s`` (0-based: Lightning's global step, which counts rollouts and drives every
schedule: reward ranges, static ramp, curriculum, LR, stopping), for ``B`` prompts (per rank) with
``G`` completions each, in seven steps:

1. rollout: the engine (:func:`restlit.rollout.build_engine`) samples ``G`` completions per prompt,
   seeded by the step and the prompt's global index;
2. rewards: ToolRL's (or ``reward_fn``'s) at reward step ``s + 1``;
3. advantages: GRPO's per group (:func:`restlit.objective.grpo_advantages`);
4. regions: each completion's tokens get regions from their own ids (offsets derived by decoding,
   ``restlit.tokens``), never from a re-tokenisation; the step is skipped here when no rank has
   an advantage or a completion token;
5. entropy statistics per region: from the rollout (the HF engine reports each token's entropy);
   otherwise (vLLM) from the update's own forward, run here for every group with its graph kept
   for step 7 (no extra no-grad pass; the checkpointed graphs of one rank's groups are held
   together until their backward), summed over ranks
   (:func:`restlit.training.distributed.reduce_sum`) and folded into the ``EntropyCurriculum``;
6. weights: the token weights at the curriculum's progress for step ``s``, and the loss
   denominator summed over the whole step and all ranks before any backward, so micro-batching
   and ranks do not change the gradient;
7. update: one micro-batch per prompt group, packed so that the prompt is encoded once for its
   ``G`` completions (:func:`restlit.kernels.grouping.group_hidden`), which saves ``(G - 1) / G`` of the prompt's compute
   and activations; log-probs and entropies come from the hidden states through the chunked LM
   head; per PPO epoch backward, gradient clipping and an optimizer step; then the LR schedule
   (:mod:`restlit.optim`) and the engine's weights.

With ``objective.ppo_epochs > 1`` only the last epoch's optimizer step goes through Lightning's
counter; the earlier ones call the strategy's ``optimizer_step`` directly, so the global step
stays the number of rollouts.

When the engine reports its sampling log-probs, the step logs how far they are from the trainer's
own at the same weights (:func:`restlit.objective.tis_statistics`), and with ``rollout.tis`` each
token's policy-gradient term is weighted by the truncated importance ratio
(:func:`restlit.objective.tis_advantages`; the engine's numerics, e.g. vLLM's kernels, make the
samples slightly off-policy).

A step whose groups all have equal rewards (no advantage), or has no completion token, or whose
loss or gradient is not finite, is skipped with its reason logged (``skipped/<reason>``), never a
crash: the weights stay as they were, but the step counts (the optimizer steps with no gradient,
which AdamW ignores), so a run always ends at ``max_steps``. The first two reasons are decided
before step 5, so such a step folds nothing into the curriculum (a non-finite step is found after
it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from restlit import adapters
from restlit.config import RunConfig
from restlit.formats import get_format
from restlit.kernels.grouping import group_hidden
from restlit.objective import (
    grpo_advantages,
    logprobs_and_entropy_from_hidden,
    loss_denominator,
    policy_loss,
    region_entropy_stats,
    region_stats,
    region_weight_metrics,
    tis_advantages,
    tis_statistics,
    token_weights,
    top_entropy_threshold,
)
from restlit.regions import Region, token_regions
from restlit.rewards import Reward, compute_reward, load_reward_function
from restlit.rollout import build_engine
from restlit.rollout.base import Completion
from restlit.tokens import completion_offsets
from restlit.training import optim
from restlit.training.curriculum import EntropyCurriculum
from restlit.training.data import PromptItem
from restlit.training.distributed import full_state_dict, reduce_sum


@dataclass
class Group:
    """One prompt and its sampled completions, as tensors for the update."""

    prompt: torch.Tensor  # [P]
    tokens: torch.Tensor  # [G, C] right-padded
    mask: torch.Tensor  # [G, C] float
    regions: torch.Tensor  # [G, C] long
    advantages: torch.Tensor  # [G]
    entropy: torch.Tensor | None  # [G, C] from the engine
    old_logp: torch.Tensor | None = None
    forward: tuple[torch.Tensor, torch.Tensor] | None = None  # the update's (logp, entropy), run at step 5
    engine_logp: torch.Tensor | None = None  # [G, C] the engine's sampling log-probs, when reported


class RestModule(L.LightningModule):
    """See the module docstring. ``policy`` and ``tokenizer`` are built by the caller
    (``restlit.models``); ``reference`` is required when ``objective.loss.kl_coef > 0``.
    ``reward_fn(completion, item, step) -> Reward`` replaces ToolRL's reward (default:
    :func:`restlit.rewards.compute_reward` with the config's ``reward`` section); ``step`` is 1-based."""

    def __init__(self, config: RunConfig, policy: Any, tokenizer: Any, reference: Any = None,
                 reward_fn: Callable[[Completion, PromptItem, int], Reward] | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.config = config
        self.policy = policy
        self.tokenizer = tokenizer
        if config.objective.loss.kl_coef > 0 and reference is None and not adapters.is_adapted(policy):
            raise ValueError("objective.loss.kl_coef > 0 needs a reference model (or a policy with LoRA adapters)")
        # Kept out of the module tree: not trained, not saved in checkpoints, not wrapped by DDP.
        self.__dict__["reference"] = reference.eval().requires_grad_(False) if reference is not None else None
        self.engine: Any = None
        # LoRA: checkpoints hold the adapters only (on_save_checkpoint); the frozen base is model.path's
        self.strict_loading = not adapters.is_adapted(policy)
        self.curriculum = EntropyCurriculum(config.objective.curriculum, config.trainer.max_steps)
        self.format = get_format(config.data.tool_format)
        if reward_fn is None and config.reward.function:
            reward_fn = load_reward_function(config.reward.function)
        self.reward_fn = reward_fn or (lambda comp, item, step: compute_reward(comp.text, item.target, step,
                                                                                config.reward, self.format))

    # -- Lightning plumbing ----------------------------------------------------------------

    def configure_callbacks(self) -> list[L.Callback]:
        return [self.curriculum]

    def configure_optimizers(self) -> Any:
        return optim.configure(self.policy, self.config.optim, self.config.trainer.max_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With LoRA the checkpoint keeps the trained parameters only (adapters, ``modules_to_save``)
        with their optimizer state: the frozen base weights are the ones ``model.path`` loads again
        on ``--resume`` (its config must not change), so a 4B model's checkpoint is megabytes, not
        gigabytes."""
        if adapters.is_adapted(self.policy):
            keep = {f"policy.{name}" for name, p in self.policy.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_fit_start(self) -> None:
        if self.engine is None:
            weights = self._engine_weights() if self.config.rollout.engine == "vllm" else None
            self.engine = build_engine(self.config, self.policy, self.tokenizer, weights=weights)

    def on_train_start(self) -> None:
        # from_pretrained returns eval mode and Lightning leaves it: without train mode, gradient
        # checkpointing (and dropout, where a model has it) would silently be off.
        self.policy.train()
        # Some strategies (FSDP) load a checkpoint's weights after on_fit_start built the engine.
        self.engine.sync_weights(self._engine_weights())

    def on_fit_end(self) -> None:
        self.engine.close()  # vLLM: give its memory back; a later fit builds a new engine
        self.engine = None

    def _engine_weights(self) -> Any:
        """What ``engine.sync_weights`` gets: the policy itself for the transformers engine (it
        samples from this very module); for vLLM its full state dict, gathered from the shards
        under FSDP (a collective: every rank calls this), with LoRA adapters merged into the base
        weights (:func:`restlit.adapters.merged_state_dict`; the base weights are not changed)."""
        if self.config.rollout.engine == "hf":
            return self.policy
        state = full_state_dict(self.policy, self.trainer.strategy.model, prefix="policy.")
        if adapters.is_adapted(self.policy):  # vLLM gets the merged weights, W + s B A
            return adapters.merged_state_dict(state, adapters.lora_layers(self.policy))
        return state

    # -- the step --------------------------------------------------------------------------

    def training_step(self, batch: list[PromptItem], batch_idx: int) -> None:
        """The seven steps of the module docstring, timed, then the step's metrics."""
        step = self.global_step
        t0 = time.perf_counter()
        completions = self.rollout(batch, step)                                          # 1
        t1 = time.perf_counter()
        rewards, metrics = self.score(batch, completions, step)                          # 2
        group_ids = torch.arange(len(batch)).repeat_interleave(self.config.rollout.n)
        advantages = grpo_advantages(rewards, group_ids, self.config.objective.advantage_scaling)  # 3
        groups = self.make_groups(batch, completions, advantages)                        # 4
        t2 = time.perf_counter()
        skip = self.skip_reason(groups)
        if skip is None:
            running = self.entropy_statistics(groups)                                    # 5
            weights, denominator = self.step_weights(groups, running, step)             # 6
            skip, update = self.update(groups, weights, denominator)                     # 7
            metrics.update(update)
        if skip is not None:
            self._count_skipped_step()
        t3 = time.perf_counter()

        n_tokens = sum(float(g.mask.sum()) for g in groups)
        curriculum = self.curriculum.metrics(step, self.config.objective.weights)
        if skip is not None:  # the running entropies were not measured by this step: not its to log
            curriculum = {k: v for k, v in curriculum.items()
                          if not (k.startswith("entropy/") or k == "curriculum/structured_entropy")}
        metrics.update(curriculum)
        metrics.update({
            "time/rollout": t1 - t0, "time/scoring": t2 - t1, "time/update": t3 - t2,
            "throughput/tokens_per_s": n_tokens / max(t3 - t0, 1e-9), "skipped": float(skip is not None),
        })
        if skip is not None:
            metrics[f"skipped/{skip}"] = 1.0
        self._log_step(metrics, step)
        # callbacks read them in trainer.callback_metrics (restlit ablate: reward/total); not logged again
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch), logger=False)
        self.log("reward", metrics["reward/total"], prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=len(batch), logger=False)

    def _log_step(self, metrics: dict[str, float], step: int) -> None:
        """Hand the step's metrics to the loggers as its own row (every ``log_every_n_steps``
        steps and the last). ``self.log_dict`` would keep every key an earlier step logged and
        repeat its value, so a skipped step's row showed the last update's loss, grad norm and lr,
        and an updating step's row a ``skipped/...`` flag of an earlier one."""
        every = max(1, self.trainer.log_every_n_steps)
        if (step + 1) % every and step + 1 < self.trainer.max_steps:
            return
        row = {k: float(v) for k, v in metrics.items()}
        row["epoch"] = float(self.current_epoch)
        for logger in self.loggers:
            logger.log_metrics(row, step=step)

    def validation_step(self, batch: list[PromptItem], batch_idx: int) -> None:
        """Greedy completions of held-out prompts, scored with the training reward."""
        sampling = dataclasses.replace(self.config.rollout.sampling(None), n=1, temperature=0.0)
        groups = self.engine.generate([item.prompt_ids for item in batch], sampling)
        _, metrics = self.score(batch, groups, self.global_step)
        self.log_dict({f"val/{k.split('/', 1)[1]}": metrics[k] for k in
                       ("reward/total", "reward/format", "reward/correctness", "reward/exact_match")},
                      on_step=False, on_epoch=True, batch_size=len(batch))

    def rollout(self, batch: list[PromptItem], step: int) -> list[list[Completion]]:
        """1. ``rollout.n`` completions per prompt of 0-based step ``step``. Prompt ``i`` of this rank
        is seeded by the step and its index in the step's global batch, so ranks split the work
        without changing it."""
        cfg = self.config
        seed = (cfg.trainer.seed * 1_000_003 + step + 1) * 65_537 + self.global_rank * len(batch)
        return self.engine.generate([item.prompt_ids for item in batch], cfg.rollout.sampling(seed))

    def score(self, batch: list[PromptItem], groups: list[list[Completion]], step: int):
        """2. The reward of every completion at reward step ``step + 1``, ``[B * G]``, and the
        step's reward and completion metrics."""
        totals, formats, corrects, exact, lengths = [], [], [], [], []
        for item, group in zip(batch, groups):
            for comp in group:
                r = self.reward_fn(comp, item, step + 1)
                totals.append(r.total)
                formats.append(r.format)
                corrects.append(r.correctness)
                exact.append(float(r.correctness == r.bounds.correctness_max or
                                   (not item.target.get("calls") and r.format == r.bounds.format_max)))
                lengths.append(len(comp.token_ids))
        rewards = torch.tensor(totals, dtype=torch.float32)
        f, c, ln = torch.tensor(formats), torch.tensor(corrects), torch.tensor(lengths, dtype=torch.float32)
        metrics = {
            "reward/total": rewards.mean().item(), "reward/total_std": rewards.std().item() if len(totals) > 1 else 0.0,
            "reward/format": f.mean().item(), "reward/format_std": f.std().item() if len(totals) > 1 else 0.0,
            "reward/correctness": c.mean().item(),
            "reward/correctness_std": c.std().item() if len(totals) > 1 else 0.0,
            "reward/exact_match": sum(exact) / len(exact), "completion/length": ln.mean().item(),
            "completion/truncated": sum(cp.finish_reason == "length" for g in groups for cp in g) / len(totals),
        }
        return rewards, metrics

    def make_groups(self, batch: list[PromptItem], groups_out: list[list[Completion]],
                    advantages: torch.Tensor) -> list[Group]:
        """4. One :class:`Group` of tensors per prompt, with each token's region from its sampled ids."""
        device = self.device
        out = []
        k = 0
        for item, group in zip(batch, groups_out):
            width = max(1, max(len(c.token_ids) for c in group))
            g = len(group)
            tokens = torch.full((g, width), self.engine.pad_id, dtype=torch.long)
            mask = torch.zeros((g, width))
            regions = torch.full((g, width), int(Region.OTHER), dtype=torch.long)
            entropy = torch.zeros((g, width)) if all(c.entropies is not None for c in group) else None
            engine_logp = torch.zeros((g, width)) if all(c.logprobs is not None for c in group) else None
            for i, comp in enumerate(group):
                n = len(comp.token_ids)
                if n == 0:
                    continue
                tokens[i, :n] = torch.as_tensor(comp.token_ids)
                mask[i, :n] = 1.0
                text, offsets = completion_offsets(self.tokenizer, comp.token_ids)
                regions[i, :n] = torch.as_tensor([int(r) for r in token_regions(text, offsets,
                                                                                         self.format.tag(text))])
                if entropy is not None:
                    entropy[i, :n] = torch.as_tensor(comp.entropies)
                if engine_logp is not None:
                    engine_logp[i, :n] = torch.as_tensor(comp.logprobs)
            out.append(Group(
                prompt=torch.as_tensor(item.prompt_ids, dtype=torch.long, device=device),
                tokens=tokens.to(device), mask=mask.to(device), regions=regions.to(device),
                advantages=advantages[k : k + g].to(device),
                entropy=entropy.to(device) if entropy is not None else None,
                engine_logp=engine_logp.to(device) if engine_logp is not None else None,
            ))
            k += g
        return out

    def skip_reason(self, groups: list[Group]) -> str | None:
        """Why this step cannot update, decided across all ranks (a rank that skipped its backward
        would leave the others waiting in the gradient all-reduce). A rank whose own groups carry
        no advantage still runs its (zero) backward when another rank has work."""
        tokens = sum(float(g.mask.sum()) for g in groups)
        active = sum(float((g.advantages != 0).any()) for g in groups)
        flags = torch.tensor([tokens, active], dtype=torch.float64, device=self.device)
        tokens, active = reduce_sum(self.trainer.strategy, flags).tolist()
        if tokens == 0:
            return "empty_completions"
        if active == 0:
            return "no_advantage"
        return None

    def entropy_statistics(self, groups: list[Group]) -> torch.Tensor:
        """5. This step's region entropy statistics, summed over ranks and folded into the
        curriculum; returns the running statistics the weights use. Entropies come from the engine
        when it reports them. Otherwise, with one PPO epoch, the update's own forward runs here
        (with gradient; kept as ``group.forward`` for step 7, which then needs no forward of its
        own); with ``ppo_epochs > 1`` a no-grad forward gives the old log-probs, and the entropies
        with them."""
        epochs = self.config.objective.ppo_epochs
        stats = torch.zeros(2, len(Region), dtype=torch.float64, device=self.device)
        for g in groups:
            if epochs > 1:
                with torch.no_grad():
                    old_logp, ent = self.group_logprobs(self.policy, g)
                g.old_logp = old_logp
                g.entropy = ent if g.entropy is None else g.entropy
            elif g.entropy is None:
                g.forward = self.group_logprobs(self.policy, g)
                g.entropy = g.forward[1]
            stats += region_entropy_stats(g.entropy, g.regions, g.mask)
        return self.curriculum.observe(reduce_sum(self.trainer.strategy, stats))

    def step_weights(self, groups: list[Group], running: torch.Tensor,
                     step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """6. Each group's token weights at step ``step`` (0-based; the curriculum's progress for it,
        the static ramp at ``step + 1``) and the step's loss denominator, summed over all ranks."""
        obj = self.config.objective
        progress = self.curriculum.progress_at(step)
        tau = None  # top-entropy: one threshold for the step's groups (this rank's)
        if obj.weights.mode == "top-entropy":
            tau = top_entropy_threshold([g.entropy for g in groups], [g.mask for g in groups],
                                        obj.weights.top_entropy_quantile)
        weights = [token_weights(g.regions, g.mask, obj.weights, region_stats=running.to(self.device),
                                 progress=progress, step=step + 1, entropy=g.entropy, threshold=tau) for g in groups]
        max_len = obj.loss.max_len or self.config.rollout.max_new_tokens
        denom = sum(loss_denominator(g.mask, w, obj.loss.aggregation, max_len) for g, w in zip(groups, weights))
        return weights, reduce_sum(self.trainer.strategy, denom)

    def update(self, groups: list[Group], weights: list[torch.Tensor],
               denominator: torch.Tensor) -> tuple[str | None, dict[str, float]]:
        """7. ``ppo_epochs`` passes of backward, clipping and an optimizer step over the groups, then
        the LR schedule and the engine's weights. Returns the skip reason (``non_finite``) or None,
        and the update's metrics."""
        cfg = self.config
        obj = cfg.objective
        # DDP averages gradients over ranks; the denominator is already global, so undo the average.
        scale = float(self.trainer.world_size)
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        sums: dict[str, float] = {}
        sampled: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # trainer / engine log-probs, mask
        for epoch in range(obj.ppo_epochs):
            optimizer.zero_grad(set_to_none=True)
            for g, w in zip(groups, weights):
                logp, ent = g.forward if g.forward is not None else self.group_logprobs(self.policy, g)
                g.forward = None  # its graph is freed by this backward
                ref_logp = self.reference_logprobs(g)
                old = g.old_logp if g.old_logp is not None else logp.detach()
                advantages = g.advantages
                if g.engine_logp is not None:
                    if epoch == 0:
                        sampled.append((old, g.engine_logp, g.mask))
                    if cfg.rollout.tis:
                        advantages = tis_advantages(g.advantages, old, g.engine_logp, g.mask, cfg.rollout.tis_cap)
                loss, m = policy_loss(logp, old, advantages, g.mask, w, config=obj.loss, denominator=denominator,
                                      ref_logp=ref_logp, entropy=ent)
                self.manual_backward(loss * scale)
                share = float(g.mask.sum())
                for key, value in m.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * share
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())  # shares of one global mean
            # A non-finite loss shows up here too; the norm is taken after the gradient all-reduce,
            # so every rank reaches the same decision.
            grad_norm = optim.clip_gradients(self.trainer.strategy.model, self.policy, cfg.optim.grad_clip)
            if not math.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                if epoch > 0:  # earlier epochs changed the weights
                    self.engine.sync_weights(self._engine_weights())
                return "non_finite", {}
            if epoch == obj.ppo_epochs - 1:
                optimizer.step()  # the step's one counted optimizer step
            else:  # not counted: the global step counts rollouts
                self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)
        # Free the gradients now, not at the next step's zero_grad: the rollout, checkpoints and the
        # final export then run without a model-sized block of memory nobody reads.
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self.engine.sync_weights(self._engine_weights())

        n = sum(float(g.mask.sum()) for g in groups) * obj.ppo_epochs
        out = {f"train/{k}": v / max(n, 1.0) for k, v in sums.items() if k != "loss"}
        out["train/loss"] = sums.get("loss", 0.0) / obj.ppo_epochs
        out["train/grad_norm"] = grad_norm
        out["train/lr"] = scheduler.get_last_lr()[0]
        if sampled:  # the engine reported log-probs: how far they are from the trainer's
            out.update(tis_statistics(*(torch.cat([x[i].reshape(-1) for x in sampled]) for i in range(3)),
                                      cap=cfg.rollout.tis_cap))
        out.update(region_weight_metrics(sum(region_stats(w, g.regions, g.mask) for g, w in zip(groups, weights))))
        return None, out

    def _count_skipped_step(self) -> None:
        """A skipped step still counts: an optimizer step without gradients, and the LR schedule."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()
        self.lr_schedulers().step()

    def reference_logprobs(self, group: Group) -> torch.Tensor | None:
        """The group's log-probs under the KL reference, without gradient: the separate reference
        model, or with LoRA the policy itself with its adapters disabled (the base model; no copy
        is loaded, :mod:`restlit.adapters`); None without a KL term."""
        if self.reference is not None:
            with torch.no_grad():
                return self.group_logprobs(self.reference, group)[0]
        if self.config.objective.loss.kl_coef > 0 and adapters.is_adapted(self.policy):
            with torch.no_grad(), adapters.disabled(self.policy):
                return self.group_logprobs(self.policy, group)[0]
        return None

    def group_logprobs(self, model: Any, group: Group) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (with gradient) and entropies (detached) of a group's sampled tokens under
        ``model`` (the policy or the reference), ``[G, C]`` each, from one packed group forward."""
        hidden = group_hidden(model, group.prompt, group.tokens)
        return logprobs_and_entropy_from_hidden(
            hidden, model.get_output_embeddings().weight, group.tokens, mask=group.mask,
            temperature=self.config.rollout.temperature if self.config.rollout.temperature > 0 else 1.0,
            chunk_size=self.config.objective.logprob_chunk_size,
        )


def _no_closure() -> None:
    """The closure of an optimizer step in manual optimisation: the backward already ran."""
