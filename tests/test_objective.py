"""restlit.objective against float64 references and hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from restlit.objective import (
    NUM_REGIONS,
    LossConfig,
    WeightConfig,
    aggregate,
    entropy_weights,
    grpo_advantages,
    kl_penalty,
    logprobs_and_entropy,
    logprobs_and_entropy_from_hidden,
    loss_denominator,
    policy_loss,
    ppo_clip_loss,
    region_entropy_stats,
    region_mean_entropy,
    region_priors,
    region_stats,
    region_weight_metrics,
    static_region_weights,
    static_weights,
    tis_advantages,
    tis_statistics,
    token_weights,
    top_entropy_threshold,
    top_entropy_weights,
)
from restlit.regions import Region

F64 = torch.float64


def reference_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """The naive full-vocabulary computation, in float64."""
    logp_all = torch.log_softmax(logits.to(F64) / temperature, dim=-1)
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def random_regions(b: int, t: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Region ids and a right-padded mask whose last valid token is EOS (tagged FORMAT)."""
    regions = torch.randint(0, NUM_REGIONS, (b, t), generator=generator)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=generator)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)
    regions[torch.arange(b), lengths - 1] = int(Region.FORMAT)
    return regions, mask


# --------------------------------------------------------------------------------------------------------
# log-probs and entropy
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_from_hidden_equals_full_softmax(chunk_size: int, temperature: float) -> None:
    torch.manual_seed(0)
    b, t, h, v = 3, 6, 8, 37
    hidden = torch.randn(b, t, h, dtype=F64, requires_grad=True)
    weight = torch.randn(v, h, dtype=F64, requires_grad=True)
    tokens = torch.randint(0, v, (b, t))
    mask = torch.ones(b, t, dtype=F64)
    mask[0, 4:] = 0
    mask[2, 1] = 0
    upstream = torch.randn(b, t, dtype=F64)

    logp, entropy = logprobs_and_entropy_from_hidden(
        hidden, weight, tokens, mask=mask, temperature=temperature, chunk_size=chunk_size
    )
    (logp * upstream).sum().backward()
    grad_h, grad_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    ref_logp, ref_entropy = reference_logprobs(hidden @ weight.T, tokens, temperature)
    (ref_logp * mask * upstream).sum().backward()

    assert logp.dtype == F64 and not entropy.requires_grad
    torch.testing.assert_close(logp, ref_logp.detach() * mask, rtol=0, atol=1e-12)
    torch.testing.assert_close(entropy, ref_entropy.detach() * mask, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_h, hidden.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_w, weight.grad, rtol=0, atol=1e-12)


def test_chunked_from_hidden_float32_matches_float64_reference() -> None:
    torch.manual_seed(1)
    n, h, v = 40, 16, 300
    hidden = torch.randn(n, h, requires_grad=True)
    weight = (0.5 * torch.randn(v, h)).requires_grad_()
    tokens = torch.randint(0, v, (n,))
    upstream = torch.randn(n)

    logp, entropy = logprobs_and_entropy_from_hidden(hidden, weight, tokens, temperature=0.9, chunk_size=7)
    (logp * upstream).sum().backward()
    h64, w64 = hidden.detach().to(F64).requires_grad_(), weight.detach().to(F64).requires_grad_()
    ref_logp, ref_entropy = reference_logprobs(h64 @ w64.T, tokens, 0.9)
    (ref_logp * upstream.to(F64)).sum().backward()

    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.to(F64), ref_logp.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.to(F64), ref_entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden.grad.to(F64), h64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weight.grad.to(F64), w64.grad, rtol=1e-4, atol=1e-5)


def test_frozen_head_gets_no_gradient() -> None:
    torch.manual_seed(2)
    hidden = torch.randn(4, 5, dtype=F64, requires_grad=True)
    weight = torch.randn(11, 5, dtype=F64)
    logp, _ = logprobs_and_entropy_from_hidden(hidden, weight, torch.randint(0, 11, (4,)), chunk_size=3)
    logp.sum().backward()
    assert weight.grad is None and hidden.grad is not None


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_from_logits_equals_full_softmax(chunk_size: int) -> None:
    torch.manual_seed(3)
    logits = (3 * torch.randn(2, 7, 29, dtype=F64)).requires_grad_()
    tokens = torch.randint(0, 29, (2, 7))
    upstream = torch.randn(2, 7, dtype=F64)
    original = logits.detach().clone()

    logp, entropy = logprobs_and_entropy(logits, tokens, temperature=1.3, chunk_size=chunk_size)
    (logp * upstream).sum().backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref_logp, ref_entropy = reference_logprobs(logits, tokens, 1.3)
    (ref_logp * upstream).sum().backward()

    assert torch.equal(logits.detach(), original), "the caller's logits must not be modified in place"
    torch.testing.assert_close(logp, ref_logp.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(entropy, ref_entropy.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, logits.grad, rtol=0, atol=1e-12)


def test_bfloat16_logits_give_float32_results_and_bfloat16_gradient() -> None:
    torch.manual_seed(4)
    logits = torch.randn(6, 50).to(torch.bfloat16).requires_grad_()
    tokens = torch.randint(0, 50, (6,))
    logp, entropy = logprobs_and_entropy(logits, tokens, chunk_size=4)
    logp.sum().backward()
    ref_logp, ref_entropy = reference_logprobs(logits.detach(), tokens, 1.0)
    assert logp.dtype == entropy.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logp.to(F64), ref_logp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(entropy.to(F64), ref_entropy, rtol=1e-6, atol=1e-6)


def test_bfloat16_hidden_states_keep_their_dtype_in_the_gradient() -> None:
    torch.manual_seed(12)
    hidden = torch.randn(2, 5, 16).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(40, 16).to(torch.bfloat16).requires_grad_()
    tokens = torch.randint(0, 40, (2, 5))
    logp, entropy = logprobs_and_entropy_from_hidden(hidden, weight, tokens, chunk_size=3)
    logp.sum().backward()
    # The reference applies the same bfloat16 head, then upcasts: the logits themselves are bf16-rounded.
    ref_logp, ref_entropy = reference_logprobs((hidden @ weight.T).detach(), tokens, 1.0)
    assert logp.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logp.to(F64), ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.to(F64), ref_entropy, rtol=1e-5, atol=1e-5)


def test_entropy_hand_computed() -> None:
    # Uniform over 4 tokens: H = log 4, logp = -log 4. A one-hot-ish distribution has H close to 0.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]], dtype=F64)
    logp, entropy = logprobs_and_entropy(logits, torch.tensor([2, 0]))
    torch.testing.assert_close(logp, torch.tensor([-math.log(4), 0.0], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(entropy, torch.tensor([math.log(4), 0.0], dtype=F64), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# Region statistics and weights
# --------------------------------------------------------------------------------------------------------


def test_region_entropy_stats_hand_computed_and_additive() -> None:
    entropy = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 0.5, 4.0, 0.0]])
    regions = torch.tensor([[Region.THINK, Region.THINK, Region.TOOL_NAME, Region.THINK],
                            [Region.FORMAT, Region.THINK, Region.OTHER, Region.OTHER]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    stats = region_entropy_stats(entropy, regions, mask)
    assert stats.shape == (2, NUM_REGIONS) and stats.dtype == F64
    assert stats[0, Region.THINK] == 3.5 and stats[1, Region.THINK] == 3
    assert stats[0, Region.TOOL_NAME] == 3.0 and stats[1, Region.TOOL_NAME] == 1
    assert stats[0, Region.OTHER] == 4.0 and stats[1, Region.OTHER] == 1
    assert stats[1, Region.RESPONSE] == 0
    means = region_mean_entropy(stats)
    assert means[Region.THINK] == pytest.approx(3.5 / 3) and means[Region.RESPONSE] == 0
    # Sums of per-micro-batch statistics are the statistics of the whole batch (what all_reduce relies on).
    split = region_entropy_stats(entropy[:1], regions[:1], mask[:1]) + region_entropy_stats(
        entropy[1:], regions[1:], mask[1:]
    )
    torch.testing.assert_close(split, stats)


def _stats_from_means(means: dict[Region, float], counts: dict[Region, float]) -> torch.Tensor:
    stats = torch.zeros(2, NUM_REGIONS, dtype=F64)
    for r, h in means.items():
        stats[0, r] = h * counts[r]
        stats[1, r] = counts[r]
    return stats


def test_entropy_weights_hand_computed() -> None:
    cfg = WeightConfig(delta=0.5, w_min=1e-3, w_max=100.0, p_think=1.0, a_think=0.0, p_tool_name=1.0)
    regions = torch.tensor([[Region.THINK, Region.THINK, Region.TOOL_NAME, Region.THINK]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    stats = _stats_from_means({Region.THINK: math.log(2), Region.TOOL_NAME: 0.0},
                              {Region.THINK: 2, Region.TOOL_NAME: 1})
    # w_hat(THINK) = 1 / (1 - 1/2 + 0.5) = 1, w_hat(TOOL_NAME) = 1 / (0 + 0.5) = 2, mean over 3 tokens 4/3.
    w = entropy_weights(regions, mask, stats, progress=0.0, config=cfg)
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.75, 1.5, 0.0]]))


def test_entropy_weights_favour_low_entropy_and_are_positive_with_mean_one() -> None:
    gen = torch.Generator().manual_seed(5)
    regions, mask = random_regions(6, 20, gen)
    entropy = torch.rand(6, 20, generator=gen, dtype=F64) * 3
    entropy[regions == Region.TOOL_NAME] *= 0.01  # tool names nearly deterministic
    stats = region_entropy_stats(entropy, regions, mask)
    # Equal priors and a clip that does not bind isolate the entropy term.
    flat = WeightConfig(p_format=1, a_format=0, p_tool_name=1, p_params=1, a_params=0, p_think=1, a_think=0,
                        p_other=1, w_min=1e-6, w_max=1e6)
    for normalize in ("sequence", "batch"):
        w = entropy_weights(regions, mask, stats, 0.3, replace(flat, normalize=normalize)).to(F64)
        valid = mask > 0
        assert (w[valid] > 0).all() and (w[~valid] == 0).all()
        assert w[(regions == Region.TOOL_NAME) & valid].min() > w[(regions == Region.THINK) & valid].max()
        if normalize == "sequence":
            torch.testing.assert_close(w.sum(-1) / mask.sum(-1), torch.ones(6, dtype=F64), rtol=0, atol=1e-6)
        else:
            assert (w.sum() / mask.sum()).item() == pytest.approx(1.0, abs=1e-6)
    # Weights depend on entropy (defect 5 of docs/method.md, "Defects of the released code"): a different
    # entropy profile gives different weights.
    w_a = entropy_weights(regions, mask, stats, 0.3, flat)
    w_b = entropy_weights(regions, mask, region_entropy_stats(entropy.flip(0), regions, mask), 0.3, flat)
    assert not torch.allclose(w_a, w_b)


def test_entropy_mode_gives_eos_response_other_and_malformed_text_positive_weight() -> None:
    # A completion with no structure at all (OTHER only) and EOS: every valid token still gets gradient.
    regions = torch.tensor([[Region.OTHER] * 5 + [Region.FORMAT],
                            [Region.THINK, Region.RESPONSE, Region.RESPONSE, Region.FORMAT, Region.OTHER,
                             Region.OTHER]])
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0, 0.0]])
    entropy = torch.tensor([[2.0] * 5 + [0.0], [1.0, 3.0, 3.0, 0.0, 0.0, 0.0]])
    stats = region_entropy_stats(entropy, regions, mask)
    for progress in (0.0, 0.5, 1.0):
        w = token_weights(regions, mask, WeightConfig(), region_stats=stats, progress=progress)
        assert (w[mask > 0] >= WeightConfig().w_min).all() and (w[mask == 0] == 0).all()


def test_entropy_clip_bounds() -> None:
    cfg = WeightConfig(w_min=0.5, w_max=1.5)
    regions = torch.tensor([[Region.FORMAT] + [Region.THINK] * 30])
    mask = torch.ones(1, 31)
    stats = _stats_from_means({Region.FORMAT: 0.0, Region.THINK: 5.0}, {Region.FORMAT: 1, Region.THINK: 30})
    w = entropy_weights(regions, mask, stats, 0.0, cfg)
    assert w[0, 0] == pytest.approx(1.5) and w.min() >= 0.5


def test_batch_normalisation_uses_global_counts_so_micro_batches_agree() -> None:
    gen = torch.Generator().manual_seed(6)
    regions, mask = random_regions(8, 12, gen)
    entropy = torch.rand(8, 12, generator=gen)
    stats = region_entropy_stats(entropy, regions, mask)
    cfg = WeightConfig(normalize="batch")
    whole = entropy_weights(regions, mask, stats, 0.4, cfg)
    parts = torch.cat([entropy_weights(regions[i : i + 3], mask[i : i + 3], stats, 0.4, cfg) for i in (0, 3, 6)])
    torch.testing.assert_close(parts, whole)


def test_curriculum_priors() -> None:
    cfg = WeightConfig()
    p0, p1 = region_priors(0.0, cfg), region_priors(1.0, cfg)
    assert p0[Region.FORMAT] == pytest.approx(1.0) and p1[Region.FORMAT] == pytest.approx(0.5)
    assert p0[Region.PARAM_NAME] == p0[Region.PARAM_VALUE] == pytest.approx(0.6)
    assert p1[Region.PARAM_NAME] == p1[Region.PARAM_VALUE] == pytest.approx(1.2)
    assert p0[Region.THINK] == pytest.approx(0.6) and p1[Region.THINK] == pytest.approx(1.0)
    assert p0[Region.TOOL_NAME] == p1[Region.TOOL_NAME] == pytest.approx(1.2)
    # Clamps: the format prior never drops below w_min, the others never exceed w_max.
    steep = WeightConfig(a_format=10.0, a_params=10.0, a_think=10.0, w_min=0.05, w_max=2.0)
    p = region_priors(1.0, steep)
    assert p[Region.FORMAT] == pytest.approx(0.05)
    assert p[Region.PARAM_VALUE] == pytest.approx(2.0) and p[Region.THINK] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        region_priors(1.5, cfg)
    with pytest.raises(ValueError):
        WeightConfig(p_other=0.0)


@pytest.mark.parametrize(
    ("step", "args", "think"), [(1, 0.602, 0.602), (100, 0.8, 0.8), (400, 1.2, 1.0)]
)
def test_static_weights_match_released_constants(step: int, args: float, think: float) -> None:
    raw = static_region_weights(step)
    assert raw[Region.FORMAT] == pytest.approx(1.0) and raw[Region.TOOL_NAME] == pytest.approx(1.2)
    assert raw[Region.PARAM_NAME] == pytest.approx(args) and raw[Region.PARAM_VALUE] == pytest.approx(args)
    assert raw[Region.THINK] == pytest.approx(think)
    assert raw[Region.RESPONSE] == 0 and raw[Region.OTHER] == 0

    regions = torch.tensor([[Region.FORMAT, Region.THINK, Region.THINK, Region.TOOL_NAME, Region.PARAM_NAME,
                             Region.PARAM_VALUE, Region.OTHER, Region.RESPONSE, Region.FORMAT]])
    mask = torch.ones(1, 9)
    mask[0, -1] = 0
    w = static_weights(regions, mask, step)
    values = [1.0, think, think, 1.2, args, args]
    mean = sum(values) / len(values)
    expected = torch.tensor([[v / mean for v in values] + [0.0, 0.0, 0.0]])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(token_weights(regions, mask, WeightConfig(mode="static"), step=step), expected)


# --------------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------------


def test_grpo_advantages_hand_computed() -> None:
    rewards = torch.tensor([1.0, 3.0, 0.0, 0.0, 4.0], dtype=F64)
    groups = torch.tensor([7, 7, 2, 2, 9])
    # Group 7: mean 2, unbiased std sqrt(2); group 2: all equal -> 0; group 9: singleton -> 0.
    a = grpo_advantages(rewards, groups, "group")
    s2 = math.sqrt(2)
    torch.testing.assert_close(a, torch.tensor([-1 / (s2 + 1e-6), 1 / (s2 + 1e-6), 0, 0, 0], dtype=F64))
    torch.testing.assert_close(grpo_advantages(rewards, groups, "none"), torch.tensor([-1.0, 1, 0, 0, 0], dtype=F64))
    std = rewards.std()
    torch.testing.assert_close(grpo_advantages(rewards, groups, "batch"),
                               torch.tensor([-1.0, 1, 0, 0, 0], dtype=F64) / (std + 1e-6))


# --------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------


def plain_grpo_loss(logp, old_logp, adv, mask, eps):
    """TRL/verl-style GRPO: token-mean of -min(r A, clip(r) A), written independently, float64."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a)
    return (per_token * mask).sum() / mask.sum()


def _batch(seed: int, b: int = 8, t: int = 10, spread: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    regions, mask = random_regions(b, t, gen)
    old = -torch.rand(b, t, generator=gen, dtype=F64) * 3
    logp = (old + spread * (torch.rand(b, t, generator=gen, dtype=F64) - 0.5)).requires_grad_()
    rewards = torch.randint(0, 4, (b,), generator=gen).to(F64)
    adv = grpo_advantages(rewards, torch.arange(b) // 4)
    entropy = torch.rand(b, t, generator=gen, dtype=F64) * 2
    return regions, mask, old, logp, adv, entropy


def test_uniform_weights_reduce_exactly_to_plain_grpo() -> None:
    regions, mask, old, logp, adv, _ = _batch(7)
    cfg = LossConfig(dual_clip=None)
    uniform = token_weights(regions, mask, WeightConfig(mode="uniform")).to(F64)
    loss, _ = policy_loss(logp, old, adv, mask, uniform, config=cfg)
    loss_none, _ = policy_loss(logp, old, adv, mask, None, config=cfg)
    (grad,) = torch.autograd.grad(loss, logp)
    ref = plain_grpo_loss(logp, old, adv, mask, 0.2)
    (ref_grad,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(loss_none, ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-15)


def test_ppo_clip_hand_computed() -> None:
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5, 10.0]], dtype=F64))
    old = torch.zeros_like(logp)
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0, -1.0]], dtype=F64)
    loss, clipped, dual = ppo_clip_loss(logp, old, adv, eps_low=0.2, eps_high=0.3, dual_clip=3.0)
    # r=1.5, A=1: max(-1.5, -1.3) = -1.3 (clipped); r=0.5, A=-1: max(0.5, 0.8) = 0.8 (clipped);
    # r=1.1, A=2: -2.2 (inside); r=0.5, A=1: max(-0.5, -0.8) = -0.5 (pessimistic: unclipped);
    # r=10, A=-1: max(10, 1.3) = 10 -> dual clip min(10, 3) = 3.
    torch.testing.assert_close(loss, torch.tensor([[-1.3, 0.8, -2.2, -0.5, 3.0]], dtype=F64))
    assert clipped.tolist() == [[True, True, False, False, False]]
    assert dual.tolist() == [[False, False, False, False, True]]


def test_dual_clip_bounds_loss_for_negative_advantages() -> None:
    ratio = torch.logspace(-2, 3, 50, dtype=F64)
    logp, old = ratio.log()[None], torch.zeros(1, 50, dtype=F64)
    for a in (-0.3, -2.0):
        adv = torch.full((1, 50), a, dtype=F64)
        loss, _, dual = ppo_clip_loss(logp, old, adv, dual_clip=3.0)
        assert loss.max().item() == pytest.approx(-3.0 * a) and (loss <= -3.0 * a + 1e-12).all()
        assert dual.any()
        unbounded, _, _ = ppo_clip_loss(logp, old, adv, dual_clip=None)
        assert unbounded.max() > -3.0 * a * 100
    # The dual clip never touches positive advantages.
    adv = torch.ones(1, 50, dtype=F64)
    torch.testing.assert_close(ppo_clip_loss(logp, old, adv, dual_clip=3.0)[0],
                               ppo_clip_loss(logp, old, adv, dual_clip=None)[0])


def test_unclipped_gradient_is_minus_w_a_r_over_denominator() -> None:
    regions, mask, old, logp, adv, entropy = _batch(8, spread=0.3)  # |log r| <= 0.15: inside the clip range
    w = entropy_weights(regions, mask, region_entropy_stats(entropy, regions, mask), 0.2).to(F64)
    denom = loss_denominator(mask, w) * 1.7  # as if other micro-batches shared the step
    loss, metrics = policy_loss(logp, old, adv, mask, w, denominator=denom)
    (grad,) = torch.autograd.grad(loss, logp)
    ratio = torch.exp(logp.detach() - old)
    torch.testing.assert_close(grad, -w * mask * adv[:, None] * ratio / denom, rtol=1e-12, atol=1e-15)
    assert metrics["clip_frac"] == 0


def test_clipped_tokens_get_no_gradient() -> None:
    logp = torch.log(torch.tensor([[2.0, 0.2]], dtype=F64)).requires_grad_()
    adv = torch.tensor([1.0], dtype=F64)
    # With A > 0 only r > 1 + eps is clipped: r = 2 loses its gradient, r = 0.2 keeps -A r / 2.
    loss, metrics = policy_loss(logp, torch.zeros(1, 2, dtype=F64), adv, torch.ones(1, 2, dtype=F64))
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad[0, 0] == 0 and grad[0, 1] == pytest.approx(-0.2 / 2)
    assert metrics["clip_frac"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("aggregation", ["token-mean-weighted", "seq-mean-token-mean", "dr-grpo"])
@pytest.mark.parametrize("normalize", ["sequence", "batch"])
def test_micro_batches_give_the_same_gradient(aggregation: str, normalize: str) -> None:
    regions, mask, old, logp, adv, entropy = _batch(9, b=8, t=12, spread=1.5)
    ref_logp = old + 0.1
    stats = region_entropy_stats(entropy, regions, mask)
    wcfg = WeightConfig(normalize=normalize)
    cfg = LossConfig(aggregation=aggregation, kl_coef=0.01, max_len=12)
    w = entropy_weights(regions, mask, stats, 0.5, wcfg).to(F64)
    loss, _ = policy_loss(logp, old, adv, mask, w, config=cfg, ref_logp=ref_logp)
    (full,) = torch.autograd.grad(loss, logp)

    splits = [slice(0, 3), slice(3, 8)]
    # Step-wide denominator: the sum of every micro-batch's share (an all-reduce across ranks does the same).
    denom = sum(loss_denominator(mask[s], w[s], aggregation, cfg.max_len) for s in splits)
    total = 0
    for s in splits:
        w_s = entropy_weights(regions[s], mask[s], stats, 0.5, wcfg).to(F64)
        part, _ = policy_loss(logp[s], old[s], adv[s], mask[s], w_s, config=cfg, denominator=denom,
                              ref_logp=ref_logp[s])
        total = total + part
    (micro,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(micro, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(total, loss, rtol=0, atol=1e-12)

    if aggregation == "token-mean-weighted":
        # The released code's per-micro-batch denominator (defect 6 of docs/method.md, "Defects of the released code")
        # does change the gradient.
        local = sum(policy_loss(logp[s], old[s], adv[s], mask[s], w[s], config=cfg, ref_logp=ref_logp[s])[0]
                    for s in splits) / len(splits)
        (wrong,) = torch.autograd.grad(local, logp)
        assert (wrong - full).abs().max() > 1e-4


def test_aggregation_modes_hand_computed() -> None:
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    w = torch.tensor([[1.0, 1.0, 2.0], [0.5, 9.0, 9.0]], dtype=F64)
    # token-mean-weighted: (1 + 2 + 6 + 2) / (1 + 1 + 2 + 0.5)
    assert aggregate(per_token, mask, w).item() == pytest.approx(11 / 4.5)
    # seq-mean-token-mean: mean(9/4, 2/0.5)
    assert aggregate(per_token, mask, w, "seq-mean-token-mean").item() == pytest.approx((9 / 4 + 4) / 2)
    # dr-grpo: 11 / (2 sequences * max_len 5)
    assert aggregate(per_token, mask, w, "dr-grpo", max_len=5).item() == pytest.approx(11 / 10)


def test_kl_estimators() -> None:
    torch.manual_seed(10)
    logp = torch.randn(1000, dtype=F64) * 3
    ref = torch.randn(1000, dtype=F64) * 3
    k3 = kl_penalty(logp, ref, "k3")
    assert (k3 >= 0).all()
    assert (kl_penalty(logp, logp, "k3") == 0).all()
    tiny = torch.tensor([1e-9, -1e-9, 1e-17], dtype=F64)
    assert (kl_penalty(torch.zeros(3, dtype=F64), tiny, "k3") >= 0).all()
    d = ref - logp
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), -d)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * d**2)
    c = d.clamp(-20, 20)  # verl's low_var_kl clamps (tests/test_reliability_numerics.py)
    torch.testing.assert_close(k3, (torch.exp(c) - c - 1).clamp(max=10))
    # Hand-computed: d = log 2 gives k3 = 2 - log 2 - 1.
    k = kl_penalty(torch.zeros(1, dtype=F64), torch.tensor([math.log(2)], dtype=F64), "k3")
    assert k.item() == pytest.approx(1 - math.log(2))


def test_kl_term_is_added_and_weighted() -> None:
    _, mask, old, logp, adv, _ = _batch(11)
    ref_logp = old - 0.2
    w = torch.rand(mask.shape, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.5
    cfg0 = LossConfig(kl_coef=0.0)
    cfg = LossConfig(kl_coef=0.05, kl_estimator="k2")
    base, _ = policy_loss(logp, old, adv, mask, w, config=cfg0, ref_logp=ref_logp)
    with_kl, metrics = policy_loss(logp, old, adv, mask, w, config=cfg, ref_logp=ref_logp)
    k2 = 0.5 * (ref_logp - logp) ** 2
    expected = base + 0.05 * (mask * w * k2).sum() / (mask * w).sum()
    torch.testing.assert_close(with_kl, expected, rtol=1e-12, atol=1e-14)
    assert metrics["kl_ref"].item() == pytest.approx(((k2 * mask).sum() / mask.sum()).item(), rel=1e-5)


def test_metrics() -> None:
    regions = torch.tensor([[Region.THINK, Region.TOOL_NAME, Region.FORMAT, Region.OTHER]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=F64)
    w = torch.tensor([[0.5, 2.0, 1.0, 0.0]], dtype=F64)
    logp = torch.log(torch.tensor([[1.0, 1.5, 1.0, 1.0]], dtype=F64))
    old = torch.zeros(1, 4, dtype=F64)
    entropy = torch.tensor([[2.0, 0.5, 1.0, 7.0]], dtype=F64)
    _, m = policy_loss(logp, old, torch.tensor([1.0], dtype=F64), mask, w, entropy=entropy)
    assert m["clip_frac"].item() == pytest.approx(1 / 3)
    assert m["dual_clip_frac"].item() == 0
    assert m["approx_kl"].item() == pytest.approx((1 / 1.5 - 1 + math.log(1.5)) / 3, rel=1e-6)
    assert m["entropy"].item() == pytest.approx(3.5 / 3)
    assert m["entropy_weighted"].item() == pytest.approx((1.0 + 1.0 + 1.0) / 3.5)
    assert m["weight_min"].item() == 0.5 and m["weight_max"].item() == 2.0
    assert not any("/" in k for k in m)  # per-region weights: region_weight_metrics
    r = region_weight_metrics(region_stats(w, regions, mask))
    assert r["weight/TOOL_NAME"] == 2.0 and r["weight/RESPONSE"] == 0
    assert r["tokens/THINK"] == pytest.approx(1 / 3) and r["tokens/OTHER"] == 0
    assert m["ratio_max"].item() == pytest.approx(1.5)
    assert all(not v.requires_grad for v in m.values())


def test_region_weight_metrics_hand_computed() -> None:
    """Sums over several groups add: the metrics of the summed statistics are the step's."""
    regions = torch.tensor([[Region.FORMAT, Region.THINK, Region.THINK], [Region.FORMAT, Region.OTHER, Region.OTHER]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w = torch.tensor([[2.0, 0.5, 1.5], [4.0, 1.0, 9.0]])  # 9.0 sits on padding
    total = region_stats(w[:1], regions[:1], mask[:1]) + region_stats(w[1:], regions[1:], mask[1:])
    assert torch.equal(total, region_stats(w, regions, mask))
    m = region_weight_metrics(total)
    assert m["weight/FORMAT"] == 3.0 and m["weight/THINK"] == 1.0 and m["weight/OTHER"] == 1.0
    assert m["weight/TOOL_NAME"] == 0.0 and m["tokens/TOOL_NAME"] == 0.0
    assert m["tokens/FORMAT"] == pytest.approx(2 / 5) and m["tokens/OTHER"] == pytest.approx(1 / 5)
    assert sum(m[f"tokens/{r.name}"] for r in Region) == pytest.approx(1.0)


def test_tis_advantages_and_statistics_hand_computed() -> None:
    """d = logp - engine_logp; ratio exp(d) truncated at cap scales each token's advantage."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0]], dtype=F64)
    engine = torch.tensor([[-1.0, -2.0 - math.log(3.0), -0.5 + math.log(2.0)], [-1.5, -1.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    adv = torch.tensor([2.0, -1.0], dtype=F64)
    out = tis_advantages(adv, logp, engine, mask, cap=2.0)
    ratio = torch.tensor([[1.0, 2.0, 0.5], [math.exp(0.5), 1.0, 1.0]], dtype=F64)  # 3 truncated to 2; padding 1
    assert torch.allclose(out.double(), adv[:, None] * ratio, atol=1e-6)
    s = tis_statistics(logp, engine, mask, cap=2.0)
    d = [0.0, math.log(3.0), -math.log(2.0), 0.5, 0.0]
    assert s["rollout/logp_abs_diff"] == pytest.approx(sum(abs(x) for x in d) / 5)
    assert s["rollout/is_ratio"] == pytest.approx(sum(math.exp(x) for x in d) / 5)
    assert s["rollout/is_ratio_max"] == pytest.approx(3.0)
    assert s["rollout/is_truncated_frac"] == pytest.approx(1 / 5)
    assert tis_statistics(logp, engine, torch.zeros_like(mask), cap=2.0) == {}


# ---------------------------------------------------------------------------------------------------------
# Top-entropy weights (ResT's opposite)
# ---------------------------------------------------------------------------------------------------------


def reference_quantile(values: list[float], p: float) -> float:
    """Linear-interpolation quantile in float64, written out: position ``p (n - 1)`` in the sorted values."""
    xs = sorted(values)
    pos = p * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def test_top_entropy_hand_computed() -> None:
    # valid entropies 0.1, 0.5, 0.9, 1.3, 2.0 (the 0.7 is padding): the 0.6 quantile is at position 2.4,
    # 0.9 + 0.4 * (1.3 - 0.9) = 1.06, so q = 0.4 keeps 1.3 and 2.0
    ent = torch.tensor([[0.1, 0.5, 0.9], [1.3, 2.0, 0.7]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    tau = top_entropy_threshold([ent], [mask], 0.4)
    assert float(tau) == pytest.approx(1.06)
    w = top_entropy_weights(ent, mask, tau)
    assert w.dtype == torch.float32
    assert w.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    # q = 1 keeps every valid token (GRPO), never a padded one
    assert top_entropy_weights(ent, mask, top_entropy_threshold([ent], [mask], 1.0)).tolist() == mask.tolist()
    # no valid token: nothing is kept
    assert float(top_entropy_threshold([ent], [torch.zeros_like(mask)], 0.2)) == math.inf


def test_top_entropy_threshold_spans_groups_of_different_widths_and_matches_float64_reference() -> None:
    g = torch.Generator().manual_seed(3)
    ents = [torch.rand(3, 7, generator=g) * 3, torch.rand(2, 11, generator=g) * 3]
    masks = [(torch.rand(3, 7, generator=g) > 0.3).float(), (torch.rand(2, 11, generator=g) > 0.3).float()]
    values = [float(h) for e, m in zip(ents, masks) for h, k in zip(e.reshape(-1), m.reshape(-1)) if k > 0]
    for q in (0.05, 0.2, 0.5, 1.0):
        tau = top_entropy_threshold(ents, masks, q)
        assert float(tau) == pytest.approx(reference_quantile(values, 1 - q), abs=1e-12)
        kept = sum(float(top_entropy_weights(e, m, tau).sum()) for e, m in zip(ents, masks))
        assert kept == sum(v >= float(tau) for v in values)
        assert kept >= q * len(values) - 1  # about the top q share (ties and interpolation aside)


def test_token_weights_top_entropy_mode_and_config() -> None:
    ent = torch.tensor([[0.2, 1.5, 0.1, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    regions = torch.full((1, 4), int(Region.THINK))
    cfg = WeightConfig(mode="top-entropy", top_entropy_quantile=0.5)
    # own threshold: the median of 0.1, 0.2, 1.5, 3.0 is 0.85
    assert token_weights(regions, mask, cfg, entropy=ent).tolist() == [[0.0, 1.0, 0.0, 1.0]]
    # a batch-wide threshold passed in wins
    assert token_weights(regions, mask, cfg, entropy=ent, threshold=2.0).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="entropies"):
        token_weights(regions, mask, cfg)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_entropy_quantile"):
            WeightConfig(mode="top-entropy", top_entropy_quantile=bad)
