"""The sections of a run configuration: one dataclass per YAML section, each field with its default.

Standard library only (no torch): ``restlit.config`` imports without the training stack. The
method's own sections (token weights, loss, curriculum: the ``objective`` section) live in
:mod:`restlit.config.method`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from restlit.config.method import ObjectiveConfig
from restlit.rewards import RewardConfig


@dataclass
class SamplingConfig:
    """How completions are sampled. ``temperature == 0`` means greedy decoding.

    Seeding is per prompt: prompt ``i`` of a ``generate`` call is sampled from seed ``seed + i``
    (and its ``j``-th completion from a stream derived from that), whatever else is in the batch.
    A caller that splits prompts across ranks offsets ``seed`` by the rank's first prompt index,
    so the completions do not depend on how the work is split. ``None``: fresh randomness."""

    n: int = 1
    """Completions per prompt."""
    max_new_tokens: int = 256
    """Generation length cap per completion."""
    temperature: float = 1.0
    """Sampling temperature; 0 decodes greedily."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (besides EOS)."""
    seed: int | None = None
    """Seed of prompt 0 (prompt i uses seed + i); null: fresh randomness."""


@dataclass
class LoraConfig:
    """LoRA adapters (the ``peft`` library): the base weights stay frozen and each targeted linear
    layer ``W`` gets a trained low-rank update, ``W x + (alpha / r) B A x``. Only the adapters (and
    ``modules_to_save``) get gradients and optimizer state; the KL reference is the policy with its
    adapters disabled (no second copy). See ``docs/adapters.md``."""

    r: int = 16
    """LoRA rank: the inner dimension of each adapter pair (``A`` is ``r x in``, ``B`` is ``out x r``)."""
    alpha: float = 32.0
    """Scale of the adapters' update: it is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapters' input during training, in [0, 1)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Names (suffixes, e.g. ``q_proj``) of the linear layers that get adapters; ``all-linear``: every
    linear layer of attention and MLP (not the LM head)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Names of further modules trained in full and saved with the adapter (e.g. ``lm_head``)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ValueError(f"target_modules must be a non-empty list of module names, got {self.target_modules!r}")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            raise ValueError("target_modules: all-linear already names every linear layer; give it alone")


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
    """Hugging Face model directory or alias (smollm2-135m: the embedded SmolLM2-135M-Instruct)."""
    tokenizer: str | None = None
    """Tokenizer directory or alias; null: the model's."""
    init: Literal["pretrained", "random"] = "pretrained"
    """pretrained (load the weights) or random (fresh weights of path's or architecture's shape)."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model's config fields for init: random, e.g. {num_hidden_layers: 1}."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the policy's weights are loaded in: float32, bfloat16 or float16."""
    gradient_checkpointing: bool | Literal["selective"] = False
    """Recompute in the backward: true (full), selective (elementwise ops only) or false."""
    seed: int = 0
    """Seed of random initialisation (init: random)."""
    lora: LoraConfig | None = None
    """LoRA adapters instead of full fine-tuning (``null``: every weight is trained); e.g.
    ``--set model.lora.r=16`` turns them on with the other fields' defaults."""


@dataclass
class DataConfig:
    """Training data: a ``restlit prepare`` output directory (``prepared``), or raw files
    (``raw``), which the DataModule prepares once into ``cache_dir`` keyed by the inputs' hash.
    Prompts longer than ``max_prompt_tokens`` are dropped and counted. ``limit`` caps the number
    of training samples (0: all)."""

    prepared: str | None = None
    """A restlit prepare output directory to train on (or give raw)."""
    raw: list[str] = field(default_factory=list)
    """Raw input files, prepared once into cache_dir (keyed by the inputs' hash)."""
    format: Literal["auto", "toolace", "sharegpt", "chat", "xlam", "hammer", "toolrl"] = "auto"
    """Layout of the raw files: auto (detected), toolace, sharegpt, chat, xlam, hammer or toolrl."""
    on_invalid: Literal["reject", "keep", "coerce"] = "reject"
    """Reference calls that break their schema (raw files): reject, keep or coerce safe fixes."""
    val_fraction: float = 0.05
    """Fraction of raw records in the validation split."""
    cache_dir: str = "data/cache"
    """Where raw files are prepared (shared by all ranks and nodes)."""
    max_prompt_tokens: int = 2048
    """Prompts longer than this (in tokens) are dropped and counted."""
    limit: int = 0
    """At most this many training samples (0: all)."""
    val_limit: int = 64
    """At most this many validation prompts scored during training."""
    seed: int = 0
    """Seed of the train / validation split of raw files."""
    tool_format: Literal["toolrl", "hermes", "llama3_json", "pythonic"] = "toolrl"
    """Output format the policy learns to write (``restlit.formats``, docs/formats.md); ``format`` is the raw input's."""


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
    """hf (transformers, the training module itself) or vllm (an in-process vLLM engine)."""
    n: int = 4
    """Completions per prompt (GRPO's group size G); at least 2."""
    max_new_tokens: int = 256
    """Generation length cap per completion."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy)."""
    top_p: float = 1.0
    """Nucleus sampling threshold, in (0, 1]."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (besides EOS)."""
    prompt_batch_size: int = 4
    """hf engine: prompts prefilled and decoded together."""
    max_model_len: int = 0
    """vllm: tokens of prompt + completion (0: data.max_prompt_tokens + max_new_tokens)."""
    gpu_memory_utilization: float = 0.3
    """vllm: share of GPU memory (on CPU: of host memory) when kv_cache_gb is unset."""
    kv_cache_gb: float | None = None
    """vllm: KV cache size in GiB; null: from gpu_memory_utilization."""
    enforce_eager: bool = False
    """vllm: skip CUDA graphs and torch.compile (quicker start, slower decoding)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """vllm: the engine's compute dtype; auto: the policy's."""
    tis: bool = False
    """Truncated importance sampling: weight each token by min(pi_trainer / pi_engine, tis_cap)."""
    tis_cap: float = 2.0
    """Cap of the truncated importance ratio; must be > 0."""
    pack_weights: bool = True
    """hf on a CPU: decode on oneDNN-packed weights (one more copy of them, a faster step)."""

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
class OptimConfig:
    """AdamW with a warm-up then a constant, linear or cosine schedule; gradients clipped by norm."""

    lr: float = 1e-6
    """AdamW learning rate of fit (> 0); sft has its own sft.lr."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to lr."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """LR after the warm-up: constant, linear (to 0) or cosine (to 0)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm of fit and sft to this (<= 0: no clipping)."""


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments and the shape of a step: ``prompts_per_step`` prompts (per
    rank), each with ``rollout.n`` completions; the update runs one prompt group per micro-batch
    (its prompt is encoded once and shared by its completions). ``num_nodes`` machines with
    ``devices`` ranks each make ``num_nodes x devices`` ranks (launch: docs/scaling.md).
    ``precision`` is Lightning's, or ``auto``: ``bf16-mixed`` where bfloat16 products are fast (a
    CPU with AMX, a CUDA GPU with bfloat16), ``32-true`` elsewhere (:func:`restlit.training.run.resolve_precision`)."""

    accelerator: str = "cpu"
    """Lightning's accelerator: cpu, gpu, auto."""
    devices: int | str = 1
    """Devices (ranks) per node, or auto."""
    num_nodes: int = 1
    """Machines; num_nodes x devices ranks in all."""
    strategy: str = "auto"
    """Lightning's strategy: auto, ddp, fsdp."""
    precision: str = "32-true"
    """Lightning's precision (32-true, bf16-mixed, bf16-true, ...) or auto."""
    max_steps: int = 100
    """Optimizer steps of the run (skipped steps count)."""
    prompts_per_step: int = 4
    """Prompts per step on each rank, each with rollout.n completions."""
    log_every_n_steps: int = 1
    """Log metrics every this many steps."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many steps (and last.ckpt)."""
    val_every: int = 0
    """Score the validation prompts every this many steps (0: never)."""
    seed: int = 0
    """Seed of the run: data order, rollout sampling, initialisation."""


@dataclass
class WandbConfig:
    """Weights & Biases (``pip install 'restlit[wandb]'``): ``mode: offline`` needs no network
    (``wandb sync`` uploads later), ``online`` logs live, ``disabled`` turns it into a no-op."""

    enabled: bool = False
    """Log to Weights & Biases (extra restlit[wandb])."""
    project: str = "restlit"
    """W&B project."""
    name: str | None = None
    """W&B run name; null: W&B's."""
    tags: list[str] = field(default_factory=list)
    """W&B run tags."""
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline (no network; wandb sync later), online or disabled."""


@dataclass
class MlflowConfig:
    """MLflow (``pip install 'restlit[mlflow]'``): a local file store in ``OUTPUT_DIR/mlruns``
    unless ``tracking_uri`` names a server."""

    enabled: bool = False
    """Log to MLflow (extra restlit[mlflow])."""
    experiment: str = "restlit"
    """MLflow experiment name."""
    run_name: str | None = None
    """MLflow run name; null: MLflow's."""
    tracking_uri: str | None = None
    """MLflow tracking server; null: a file store in OUTPUT_DIR/mlruns."""


@dataclass
class LoggingConfig:
    """Loggers (:mod:`restlit.loggers`): CSV (``metrics.csv``), TensorBoard when installed, and
    the opt-in ``wandb`` and ``mlflow``."""

    csv: bool = True
    """Write metrics.csv (one row per step)."""
    tensorboard: bool = True
    """Write TensorBoard logs when TensorBoard is installed."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases (see logging.wandb)."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    """MLflow (see logging.mlflow)."""


@dataclass
class SFTConfig:
    """``restlit sft``: supervised warm start on the prepared targets (loss on target tokens).
    ``gradient_checkpointing`` overrides ``model.gradient_checkpointing`` for the warm start
    (``null``: the model's), whose batches and memory differ from ``fit``'s."""

    epochs: int = 1
    """Passes over the training samples (when max_steps is 0)."""
    max_steps: int = 0
    """Optimizer steps of the warm start (0: epochs decide)."""
    batch_size: int = 4
    """Samples per optimizer step (one backward per sample)."""
    lr: float = 5e-5
    """AdamW learning rate of the warm start."""
    max_seq_tokens: int = 3072
    """Prompt + target tokens per sample, cut beyond; must exceed data.max_prompt_tokens."""
    gradient_checkpointing: bool | Literal["selective"] | None = None
    """The warm start's own checkpointing mode; null: model.gradient_checkpointing."""


@dataclass
class AblationConfig:
    """``restlit ablate`` (see :mod:`restlit.ablation`): ``arms`` maps an arm's name to its config
    overrides (``KEY=VALUE``; empty: the five default arms), each arm runs ``seeds`` times
    (``trainer.seed`` 0 .. seeds-1), and every ``eval_every`` steps (0: only at the end) the policy
    is scored greedily on ``suites`` (``restlit eval`` names), the first ``eval_limit`` items of each,
    at most ``eval_tokens`` new tokens."""

    arms: dict[str, list[str]] = field(default_factory=dict)
    """Arm name -> its KEY=VALUE config overrides; empty: the five default arms."""
    seeds: int = 1
    """Runs per arm (trainer.seed 0 .. seeds-1)."""
    eval_every: int = 0
    """Score each arm every this many steps (0: only at the end)."""
    suites: list[str] = field(default_factory=lambda: ["heldout"])
    """restlit eval suite names each arm is scored on."""
    eval_limit: int = 32
    """Items scored per suite (the first ones)."""
    eval_tokens: int = 128
    """Generation length cap when scoring."""

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
    """The policy (see model)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data (see data)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling of completions (see rollout)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward ranges (see reward)."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Weights, loss, advantages, curriculum (see objective)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and LR schedule of fit (see optim)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Lightning Trainer and the shape of a step (see trainer)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The supervised warm start (see sft)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Loggers (see logging)."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """restlit ablate's arms and scoring (see ablation)."""
    output_dir: str = "runs/default"
    """The run directory: config, metrics, checkpoints, final model."""
