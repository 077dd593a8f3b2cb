"""The one way to load a run configuration: typed dataclasses read from YAML, with overrides.

A config file has the sections of :class:`RunConfig`; every key is checked against its dataclass
and its type, so a typo or a bad value fails with one line naming the key and what is allowed::

    objective.weights.mode: 'entropi' is not allowed; choose one of: uniform, static, entropy

Overrides use dotted keys and YAML values: ``--set optim.lr=2e-6 --set rollout.n=8``. The
resolved config is written into the run directory as ``config.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from restlit.errors import UserError
from restlit.objective import LossConfig, WeightConfig
from restlit.rewards import Ramp, RewardConfig
from restlit.rollout.base import SamplingConfig


class ConfigError(UserError, ValueError):
    """A config key or value the user must fix; the message is one line."""


# ------------------------------------------------------------------------------------------------
# Sections
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
    generating. Measured on workload W: on the AMD EPYC machine (2026-12-01) packing took a decoding
    step from 194 to 164 ms (``benchmarks/bench_kernels.py``) and the rollout from 37 to 33 s
    (``benchmarks/bench_step.py --modes entropy entropy+plain``); the fused step's gain on this
    project's Intel Xeon is in ``benchmarks/RESULTS.md`` (``bench_step``, ``entropy+unfused``).
    Turn it off when memory is tighter than time."""

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
    CPU with AMX, a CUDA GPU with bfloat16), ``32-true`` elsewhere (:func:`restlit.train.resolve_precision`)."""

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


# ------------------------------------------------------------------------------------------------
# Building from plain data, with one-line errors
# ------------------------------------------------------------------------------------------------


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys: {', '.join(f.name for f in dataclasses.fields(tp))}"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` or a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value in args:
            return value
        shown = value if isinstance(value, str) else repr(value)
        raise ConfigError(f"{key}: {shown!r} is not allowed; choose {_describe(tp)}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a bug in the dataclasses, not user input


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(fields)}")
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def _parse_override(item: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=2e-6")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


# (key, test, allowed range) checked after building; the message names the key and the range.
_RANGES: list[tuple[str, Any, str]] = [
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("rollout.n", lambda v: v >= 1, ">= 1"),
    ("rollout.temperature", lambda v: v >= 0, ">= 0 (0 samples greedily)"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("trainer.prompts_per_step", lambda v: v >= 1, ">= 1"),
    ("trainer.max_steps", lambda v: v >= 1, ">= 1"),
    ("trainer.num_nodes", lambda v: v >= 1, ">= 1"),
    ("sft.batch_size", lambda v: v >= 1, ">= 1"),
]


def check_ranges(config: RunConfig) -> RunConfig:
    """A ConfigError naming the first key outside its allowed range (see ``_RANGES``)."""
    for key, ok, allowed in _RANGES:
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise ConfigError(f"{key}: must be {allowed}, got {value}")
    if config.rollout.n == 1:
        raise ConfigError("rollout.n: must be >= 2: GRPO's advantage is a completion's reward minus its "
                          "group's mean, so with one completion per prompt every advantage is 0")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (or start from the defaults), apply ``KEY=VALUE`` overrides, validate."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if data is None:
            raise ConfigError(f"{path}: the config is empty; start from one in configs/")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return check_ranges(_build(RunConfig, data))


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (readable back by :func:`load_config`)."""
    import yaml

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


__all__ = [
    "AblationConfig",
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "LoggingConfig",
    "LossConfig",
    "MlflowConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "Ramp",
    "RewardConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "TrainerConfig",
    "WandbConfig",
    "WeightConfig",
    "load_config",
    "save_config",
    "to_dict",
]
