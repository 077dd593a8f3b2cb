"""The method's settings: how tokens are weighted (:class:`WeightConfig`), how the loss is aggregated
and regularised (:class:`LossConfig`), the entropy curriculum (:class:`CurriculumConfig`), and the
``objective`` section that holds them (:class:`ObjectiveConfig`).

Standard library only (no torch). :mod:`restlit.objective`, whose functions take these, re-exports
:class:`WeightConfig` and :class:`LossConfig`; :mod:`restlit.config.sections` holds the run's other
sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WeightMode = Literal["uniform", "static", "entropy", "top-entropy"]
Normalization = Literal["sequence", "batch"]
Aggregation = Literal["token-mean-weighted", "seq-mean-token-mean", "dr-grpo"]
AdvantageScaling = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]


@dataclass(frozen=True)
class WeightConfig:
    """How tokens are weighted in the policy gradient.

    ``mode``:
        ``uniform``: every valid token weighs 1 (plain GRPO).
        ``static``: the released code's constants and step schedule (:func:`static_region_weights`).
        ``entropy``: the paper's entropy-informed weights (:func:`entropy_weights`).
        ``top-entropy``: ResT's opposite, only the batch's top-``top_entropy_quantile`` highest-entropy
        tokens get gradient, each with weight 1 (:func:`restlit.topentropy.top_entropy_weights`).

    Entropy-mode defaults, and why (the paper gives no values):

    - ``delta = 0.2``: the weight of a region is ``prior / (1 - exp(-H) + delta)``, so ``delta`` caps the
      ratio between a deterministic region (H = 0) and a near-uniform one (H -> inf) at ``(1 + delta) / delta
      = 6`` for equal priors; 0.1 would allow 11x, which with typical think entropies (~1 nat) gives format
      tokens ~10x the weight of reasoning tokens before clipping.
    - ``w_min = 0.05, w_max = 5.0``: the post-normalisation clip. 5 keeps a handful of format tokens from
      dominating a long completion; 0.05 keeps every valid token in the gradient (defect 4 of
      docs/method.md, "Defects of the released code").
    - Priors and curriculum slopes (``nu`` in [0, 1] is training progress) reproduce the released code's
      schedule endpoints on a progress scale: parameters 0.6 -> 1.2 (``a_params = 0.6``), think 0.6 -> 1.0
      (``a_think = 0.4``), tool name held at 1.2; format decays 1.0 -> 0.5 (``a_format = 0.5``), the paper's
      shift of weight from structure to reasoning. RESPONSE follows the think prior (free text the policy
      writes for the user); OTHER (JSON punctuation, keys, stray text) gets a constant 0.6, the free-text
      starting prior, so that only its entropy, not its prior, decides how much it is up-weighted.
    - ``normalize = "sequence"``: mean weight 1 over each sequence's valid tokens, as the released code does.
    """

    mode: WeightMode = "entropy"
    """uniform (plain GRPO), static (the released code's constants), entropy (ResT's weights) or top-entropy (ResT's opposite: only the highest-entropy tokens)."""
    delta: float = 0.2
    """Smoothing of the entropy term: weight = prior / (1 - exp(-H) + delta); must be > 0."""
    w_min: float = 0.05
    """Lower clip of a token's normalised weight: every valid token keeps at least this."""
    w_max: float = 5.0
    """Upper clip of a token's normalised weight."""
    normalize: Normalization = "sequence"
    """Mean weight 1 over each sequence's valid tokens (sequence) or over the batch's (batch)."""
    p_format: float = 1.0
    """FORMAT prior at progress nu = 0 (the tags and special tokens)."""
    a_format: float = 0.5
    """How much the FORMAT prior falls by nu = 1: max(w_min, p_format - a_format * nu)."""
    p_tool_name: float = 1.2
    """TOOL_NAME prior, constant through training."""
    p_params: float = 0.6
    """PARAM_NAME and PARAM_VALUE prior at nu = 0."""
    a_params: float = 0.6
    """How much the parameter prior rises by nu = 1: min(w_max, p_params + a_params * nu)."""
    p_think: float = 0.6
    """THINK and RESPONSE prior at nu = 0."""
    a_think: float = 0.4
    """How much the THINK / RESPONSE prior rises by nu = 1: min(w_max, p_think + a_think * nu)."""
    p_other: float = 0.6
    """OTHER prior (JSON punctuation, keys, stray text), constant."""
    top_entropy_quantile: float = 0.2
    """``top-entropy`` mode: the share q of a batch's valid tokens, the highest-entropy ones, that get gradient."""

    def __post_init__(self) -> None:
        if self.mode not in ("uniform", "static", "entropy", "top-entropy"):
            raise ValueError(f"unknown weight mode {self.mode!r}")
        if not 0 < self.top_entropy_quantile <= 1:
            raise ValueError(f"top_entropy_quantile must be in (0, 1], got {self.top_entropy_quantile}")
        if self.normalize not in ("sequence", "batch"):
            raise ValueError(f"normalize must be 'sequence' or 'batch', got {self.normalize!r}")
        if self.delta <= 0:
            raise ValueError(f"delta must be > 0, got {self.delta}")
        if not 0 < self.w_min <= self.w_max:
            raise ValueError(f"need 0 < w_min <= w_max, got {self.w_min}, {self.w_max}")
        for name in ("p_format", "p_tool_name", "p_params", "p_think", "p_other"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 so that every valid token keeps a positive weight")


@dataclass(frozen=True)
class LossConfig:
    """PPO-clip policy loss with optional KL to a reference policy.

    Defaults follow the released ResT run (verl's): ``eps_low = eps_high = 0.2``, dual clip ``c = 3``, no KL.
    Set ``eps_high = 0.28`` for DAPO's clip-higher, ``dual_clip = None`` to disable the dual clip,
    ``kl_coef = 0.003`` for the paper's KL variant. ``max_len`` is the generation budget used by ``dr-grpo``
    (defaults to the padded length of each call, which differs between micro-batches: set it).
    """

    eps_low: float = 0.2
    """PPO clip below: the ratio is clipped at 1 - eps_low (0 <= eps_low < 1)."""
    eps_high: float = 0.2
    """PPO clip above: the ratio is clipped at 1 + eps_high (0.28 for DAPO's clip-higher)."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c > 1 bounding the loss of negative advantages; null disables it."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the frozen reference policy (0: no reference is kept)."""
    kl_estimator: KLEstimator = "k3"
    """KL estimator: k1, k2 or k3 (Schulman's approximations)."""
    aggregation: Aggregation = "token-mean-weighted"
    """token-mean-weighted (step-wide weighted mean), seq-mean-token-mean or dr-grpo."""
    max_len: int | None = None
    """Generation budget dr-grpo divides by (null: the padded length of each batch; set it)."""

    def __post_init__(self) -> None:
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}")
        if self.aggregation not in ("token-mean-weighted", "seq-mean-token-mean", "dr-grpo"):
            raise ValueError(f"unknown aggregation {self.aggregation!r}")



@dataclass
class CurriculumConfig:
    """How training progress ``nu`` in [0, 1] advances (see :mod:`restlit.curriculum`).

    Step ``s = 0 .. T-1`` (``T = total_steps``; 0: the trainer's ``max_steps``) uses and logs one
    ``nu``. ``by: step``: ``nu = min(1, s / (T - 1))`` (1 when ``T = 1``), so the last step uses 1.
    ``by: entropy`` advances ``nu`` only while the running mean entropy of the structured regions
    (tool name, parameter names and values, format) has stabilised: the relative change of its
    exponential moving average (``ema`` decay) over a step is below ``tolerance``; each stable step
    adds ``1 / (T - 1)``. ``by: none``: ``nu = 0`` throughout (priors frozen at their start).
    ``ema`` also smooths the region entropies that the weights use (0: use each step's own
    statistics). Skipped steps fold in no entropies and advance no ``by: entropy`` progress."""

    by: Literal["step", "entropy", "none"] = "step"
    """How progress nu advances: step (linearly), entropy (on stable steps only) or none (nu = 0)."""
    total_steps: int = 0
    """Steps over which nu goes from 0 to 1 (0: trainer.max_steps)."""
    ema: float = 0.0
    """Decay of the running mean of region entropies (0: each step's own statistics)."""
    tolerance: float = 0.05
    """by: entropy: the relative change below which a step counts as stable."""


@dataclass
class ObjectiveConfig:
    """The ResT objective: token weights, the PPO/GRPO loss, advantages, the curriculum."""

    weights: WeightConfig = field(default_factory=WeightConfig)
    """Token weights (see objective.weights)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The PPO-clip loss and its aggregation (see objective.loss)."""
    advantage_scaling: Literal["group", "batch", "none"] = "group"
    """GRPO advantage: divide by the group's std (group), the batch's (batch) or not (none)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """How training progress nu advances (see objective.curriculum)."""
    ppo_epochs: int = 1
    """Optimizer passes over each rollout (1: on-policy, no old log-probs needed)."""
    logprob_chunk_size: int = 2048
    """Positions per chunk of the LM head's log-probs (bounds the [B, T, V] memory)."""
