"""A small byte-level BPE tokenizer trained on the testbed's own text, saved as a Hugging Face
fast tokenizer with a chat template, so that restlit loads it like any model's.

Byte-level BPE (the ``tokenizers`` library) decodes every id sequence back to exactly the text
that was encoded, which :mod:`restlit.tokens` relies on to find each sampled token's region.

The chat template renders the user and assistant turns between role markers and leaves the system
message out: the testbed's five tools are the same in every sample, so the model learns them from
the data and the prompt stays a few dozen tokens long (restlit still renders and passes the system
prompt; only this tokenizer's template drops it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

EOS = "<|end|>"
PAD = "<|pad|>"
SPECIAL = [PAD, EOS, "<|user|>", "<|assistant|>", "<|tool|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}"
                 "{% if m['role'] != 'assistant' or not loop.last %}<|end|>{% endif %}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Any:
    """A ``PreTrainedTokenizerFast`` trained on ``texts``: byte-level BPE with ``vocab_size`` entries
    (the 256 bytes, the special tokens, the merges), EOS ``<|end|>``, PAD ``<|pad|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def records_text(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The text a tokenizer should see from chat records: each request and each rendered answer."""
    from restlit.prompts import render_target

    for rec in records:
        for m in rec["messages"]:
            if m["role"] == "user":
                yield m["content"]
            elif m["role"] == "assistant":
                think = m["content"].removeprefix("<think>").removesuffix("</think>").strip()
                calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                         for c in m.get("tool_calls", [])]
                yield render_target(think, calls, None)


def build_tokenizer(records: Iterable[dict[str, Any]], out: str | Path, vocab_size: int = 512) -> Path:
    """Train on :func:`records_text` of ``records`` and save into ``out`` (which must not exist)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    train_tokenizer(records_text(records), vocab_size).save_pretrained(out)
    return out


__all__ = ["CHAT_TEMPLATE", "EOS", "PAD", "build_tokenizer", "records_text", "train_tokenizer"]
