"""Token-level helpers shared by training and evaluation: the prompt's token ids, and the
character offsets of generated tokens derived from the ids themselves.

Re-tokenising a completion's text can split it differently from the tokens the policy actually
sampled; the regions of the sampled tokens are what the loss needs. So the offsets come from
decoding: token ``k`` covers ``text[len(decode(ids[:k])) : len(decode(ids[:k+1]))]``. Special
tokens (EOS) decode to nothing and get empty offsets, which ``token_regions`` maps to FORMAT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def prompt_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """The token ids of a chat prompt (``restlit.prompts`` messages), rendered by the tokenizer's
    chat template and ending with the opening of the assistant turn. The one way prompts are
    tokenised, for training, SFT and evaluation alike."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """``(text, offsets)`` for generated ``ids``: the decoded text (special tokens skipped) and
    one ``(start, end)`` per id, non-decreasing and within the text.

    Special tokens get empty offsets. A byte-level token holding only part of a multi-byte
    character decodes to nothing by itself; it is given the character it helps to build (the one
    at its position), so that it takes that character's region rather than FORMAT's."""
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not ids:
        return text, []
    prefixes = tokenizer.batch_decode([ids[:k] for k in range(1, len(ids) + 1)], skip_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    offsets: list[tuple[int, int]] = []
    prev = 0
    for token, prefix in zip(ids, prefixes):
        end = min(max(len(prefix), prev), len(text))
        if end == prev and token not in special and text:
            offsets.append((min(prev, len(text) - 1), min(prev, len(text) - 1) + 1))
        else:
            offsets.append((prev, end))
        prev = end
    return text, offsets
