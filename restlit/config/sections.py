"""The sections of a run configuration: one dataclass per YAML section, each field with its default.

Standard library only (no torch): ``restlit.config`` imports without the training stack. The loss's
own settings (:class:`WeightConfig`, :class:`LossConfig`) live here too and are re-exported by
:mod:`restlit.objective`, whose functions take them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from restlit.rewards import RewardConfig

WeightMode = Literal["uniform", "static", "entropy", "top-entropy"]
Normalization = Literal["sequence", "batch"]
Aggregation = Literal["token-mean-weighted", "seq-mean-token-mean", "dr-grpo"]
AdvantageScaling = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]


# ------------------------------------------------------------------------------------------------
# The objective's settings (taken by restlit.objective's functions)
# ------------------------------------------------------------------------------------------------

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
    delta: float = 0.2
    w_min: float = 0.05
    w_max: float = 5.0
    normalize: Normalization = "sequence"
    p_format: float = 1.0
    a_format: float = 0.5
    p_tool_name: float = 1.2
    p_params: float = 0.6
    a_params: float = 0.6
    p_think: float = 0.6
    a_think: float = 0.4
    p_other: float = 0.6
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
    eps_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3"
    aggregation: Aggregation = "token-mean-weighted"
    max_len: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}")
        if self.aggregation not in ("token-mean-weighted", "seq-mean-token-mean", "dr-grpo"):
            raise ValueError(f"unknown aggregation {self.aggregation!r}")


# ------------------------------------------------------------------------------------------------
# How a rollout engine samples (taken by restlit.rollout's engines)
# ------------------------------------------------------------------------------------------------


@dataclass
class SamplingConfig:
    """How completions are sampled. ``temperature == 0`` means greedy decoding.

    Seeding is per prompt: prompt ``i`` of a ``generate`` call is sampled from seed ``seed + i``
    (and its ``j``-th completion from a stream derived from that), whatever else is in the batch.
    A caller that splits prompts across ranks offsets ``seed`` by the rank's first prompt index,
    so the completions do not depend on how the work is split. ``None``: fresh randomness."""

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


# ------------------------------------------------------------------------------------------------
# Sections of the YAML file
# ------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The policy. ``path`` is a Hugging Face model directory or an alias (``smollm2-135m``).
    ``init: random`` builds the architecture of ``path`` (or of ``architecture``) with fresh random
    weights, which is how the tests get a tiny model; ``architecture`` overrides config fields,
    e.g. ``{hidden_size: 32, num_hidden_layers: 1}``. ``tokenizer`` defaults to ``path``.
    ``gradient_checkpointing`` recomputes each layer in the backward instead of keeping its
    activations: ``true`` (full) costs about a third more update compute for a fraction of the
    activation memory; ``selective`` keeps the matrix products' and attention's outputs and
    recomputes only the elementwise operations: between full and off in time and in memory
    (:mod:`restlit.checkpointing`)."""

    path: str = "smollm2-135m"
    tokenizer: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    architecture: dict[str, Any] = field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool | Literal["selective"] = False
    seed: int = 0


@dataclass
class DataConfig:
    """Training data: a ``restlit prepare`` output directory (``prepared``), or raw files
    (``raw``), which the DataModule prepares once into ``cache_dir`` keyed by the inputs' hash.
    Prompts longer than ``max_prompt_tokens`` are dropped and counted. ``limit`` caps the number
    of training samples (0: all)."""

    prepared: str | None = None
    raw: list[str] = field(default_factory=list)
    format: Literal["auto", "toolace", "sharegpt", "chat", "xlam", "hammer", "toolrl"] = "auto"
    on_invalid: Literal["reject", "keep", "coerce"] = "reject"
    val_fraction: float = 0.05
    cache_dir: str = "data/cache"
    max_prompt_tokens: int = 2048
    limit: int = 0
    val_limit: int = 64
    seed: int = 0


@dataclass
class RolloutConfig:
    """Sampling: ``n`` completions per prompt (G), up to ``max_new_tokens`` each.

    ``engine``: ``hf`` (transformers, samples from the training module itself; ``prompt_batch_size``
    prompts prefilled together) or ``vllm`` (an in-process vLLM engine that gets the policy's weights
    after every optimizer step; ``pip install 'restlit[vllm]'``). vLLM's size: ``max_model_len``
    tokens of prompt + completion (0: ``data.max_prompt_tokens + max_new_tokens``), the KV cache
    ``kv_cache_gb`` GiB, or when that is unset the ``gpu_memory_utilization`` share of the GPU (on
    CPU: of host memory, counted against the whole process); ``enforce_eager`` skips CUDA graphs and
    torch.compile (quicker start, slower decoding); ``dtype`` is the engine's compute type (``auto``:
    the policy's; e.g. ``bfloat16`` under a float32 policy is faster but further off-policy).

    The trainer logs how far the engine's sampling log-probs are from its own (``rollout/*``
    metrics); ``tis`` multiplies each token's policy-gradient term by the truncated importance ratio
    ``min(pi_trainer / pi_engine, tis_cap)`` to correct for that mismatch.

    ``pack_weights`` (``hf`` engine on a CPU, float32): generate with the linear layers on
    oneDNN-packed copies of their weights, taken at each rollout (:mod:`restlit.packed`), and, for a
    Llama-family model, decode with the written-out step on fused packed projections
    (:mod:`restlit.decoding`; same samples). It costs one more copy of the linear weights while
    generating, for a shorter decoding step (``bench_kernels`` and ``bench_step``'s ``entropy+plain`` /
    ``entropy+unfused`` rows in ``benchmarks/RESULTS.md``). Turn it off when memory is tighter than time."""

    engine: Literal["hf", "vllm"] = "hf"
    n: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    prompt_batch_size: int = 4
    max_model_len: int = 0
    gpu_memory_utilization: float = 0.3
    kv_cache_gb: float | None = None
    enforce_eager: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tis: bool = False
    tis_cap: float = 2.0
    pack_weights: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_gb is not None and self.kv_cache_gb <= 0:
            raise ValueError(f"kv_cache_gb must be > 0 (or null), got {self.kv_cache_gb}")
        if self.tis_cap <= 0:
            raise ValueError(f"tis_cap must be > 0, got {self.tis_cap}")

    def sampling(self, seed: int | None) -> SamplingConfig:
        """The engine's :class:`SamplingConfig`: its fields (but ``seed``) taken from this section."""
        names = [f.name for f in dataclasses.fields(SamplingConfig) if f.name != "seed"]
        return SamplingConfig(**{k: copy.deepcopy(getattr(self, k)) for k in names}, seed=seed)


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
    total_steps: int = 0
    ema: float = 0.0
    tolerance: float = 0.05


@dataclass
class ObjectiveConfig:
    """The ResT objective: token weights, the PPO/GRPO loss, advantages, the curriculum."""

    weights: WeightConfig = field(default_factory=WeightConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    advantage_scaling: Literal["group", "batch", "none"] = "group"
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    ppo_epochs: int = 1
    logprob_chunk_size: int = 2048


@dataclass
class OptimConfig:
    """AdamW with a warm-up then a constant, linear or cosine schedule; gradients clipped by norm."""

    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    grad_clip: float = 1.0


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments and the shape of a step: ``prompts_per_step`` prompts (per
    rank), each with ``rollout.n`` completions; the update runs one prompt group per micro-batch
    (its prompt is encoded once and shared by its completions). ``num_nodes`` machines with
    ``devices`` ranks each make ``num_nodes x devices`` ranks (launch: README, "Scaling out").
    ``precision`` is Lightning's, or ``auto``: ``bf16-mixed`` where bfloat16 products are fast (a
    CPU with AMX, a CUDA GPU with bfloat16), ``32-true`` elsewhere (:func:`restlit.training.run.resolve_precision`)."""

    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = 100
    prompts_per_step: int = 4
    log_every_n_steps: int = 1
    checkpoint_every: int = 50
    val_every: int = 0
    seed: int = 0


@dataclass
class WandbConfig:
    """Weights & Biases (``pip install 'restlit[wandb]'``): ``mode: offline`` needs no network
    (``wandb sync`` uploads later), ``online`` logs live, ``disabled`` turns it into a no-op."""

    enabled: bool = False
    project: str = "restlit"
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: Literal["offline", "online", "disabled"] = "offline"


@dataclass
class MlflowConfig:
    """MLflow (``pip install 'restlit[mlflow]'``): a local file store in ``OUTPUT_DIR/mlruns``
    unless ``tracking_uri`` names a server."""

    enabled: bool = False
    experiment: str = "restlit"
    run_name: str | None = None
    tracking_uri: str | None = None


@dataclass
class LoggingConfig:
    """Loggers (:mod:`restlit.loggers`): CSV (``metrics.csv``), TensorBoard when installed, and
    the opt-in ``wandb`` and ``mlflow``."""

    csv: bool = True
    tensorboard: bool = True
    progress_bar: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class SFTConfig:
    """``restlit sft``: supervised warm start on the prepared targets (loss on target tokens).
    ``gradient_checkpointing`` overrides ``model.gradient_checkpointing`` for the warm start
    (``null``: the model's), whose batches and memory differ from ``fit``'s."""

    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 4
    lr: float = 5e-5
    max_seq_tokens: int = 3072
    gradient_checkpointing: bool | Literal["selective"] | None = None


@dataclass
class AblationConfig:
    """``restlit ablate`` (see :mod:`restlit.ablation`): ``arms`` maps an arm's name to its config
    overrides (``KEY=VALUE``; empty: the five default arms), each arm runs ``seeds`` times
    (``trainer.seed`` 0 .. seeds-1), and every ``eval_every`` steps (0: only at the end) the policy
    is scored greedily on ``suites`` (``restlit eval`` names), the first ``eval_limit`` items of each,
    at most ``eval_tokens`` new tokens."""

    arms: dict[str, list[str]] = field(default_factory=dict)
    seeds: int = 1
    eval_every: int = 0
    suites: list[str] = field(default_factory=lambda: ["heldout"])
    eval_limit: int = 32
    eval_tokens: int = 128

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.eval_every < 0 or self.eval_limit < 1 or self.eval_tokens < 1:
            raise ValueError("eval_every must be >= 0, eval_limit and eval_tokens >= 1")
        for name, overrides in self.arms.items():
            if not str(name) or ":" in str(name) or "/" in str(name):
                raise ValueError(f"arm name {name!r}: must be non-empty, without ':' or '/'")
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise ValueError(f"arm {name!r}: expected a list of KEY=VALUE overrides")


@dataclass
class RunConfig:
    """A whole run. ``output_dir`` holds checkpoints, logs, the resolved config and ``final/``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    output_dir: str = "runs/default"
