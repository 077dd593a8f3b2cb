"""``ToolUseDataModule``: prepared samples -> chat-templated prompt token ids, step by step.

Data comes from a ``restlit prepare`` directory, or from raw files that ``prepare_data()`` runs
through the same ``data_prep`` pipeline once, cached under ``data.cache_dir`` by a hash of the
inputs and options (so ``fit`` on raw files gets the same validation, rejects and manifest).

Prompts and reference answers are rendered from the structured samples by the run's output format
(``data.tool_format``, :mod:`restlit.formats`) and the chat template; prompts over
``max_prompt_tokens`` are dropped and counted.

Batches are a pure function of the step: step ``s`` takes prompts ``[s*B*W, (s+1)*B*W)`` of an
endless sequence of epoch permutations (each seeded by ``(seed, epoch)``), and rank ``r`` of ``W``
takes its contiguous share of ``B``. So a resumed run sees exactly the prompts the uninterrupted
run would have, and two ranks together see what one process with ``2B`` prompts sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from restlit.config import DataConfig
from restlit.errors import UserError
from restlit.formats import get_format


@dataclass
class PromptItem:
    """One training prompt: its token ids and what the reward needs."""

    id: str
    prompt_ids: list[int]
    target: dict[str, Any]
    target_text: str


class DataError(UserError):
    """The data section points at something unusable; the message is one line."""


def prepared_dir(config: DataConfig) -> Path:
    """Where the prepared dataset is: ``data.prepared``, or the cache entry for ``data.raw``."""
    if config.prepared:
        return Path(config.prepared)
    if not config.raw:
        raise DataError("data: set either data.prepared (a `restlit prepare` output) or data.raw (raw files)")
    h = hashlib.sha256()
    for p in config.raw:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"data.raw: {p}: no such file")
        h.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(json.dumps([config.format, config.on_invalid, config.val_fraction, config.seed]).encode())
    return Path(config.cache_dir) / f"prepared-{h.hexdigest()[:16]}"


@contextlib.contextmanager
def _entry_lock(entry: Path) -> Iterator[None]:
    """Hold ``.<entry>.lock`` beside a cache entry (an exclusive ``flock``, waited for, released
    when its process dies): runs preparing the same raw data at once prepare it once, the others
    wait and read it (each prepared its own copy, and all but the first left it as ``.new``)."""
    import fcntl

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(entry.parent / f".{entry.name}.lock", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise DataError(f"data.cache_dir: cannot write {entry.parent}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class StepBatches(IterableDataset):
    """Yields the prompts of steps ``start, start + 1, ...`` for one rank (see module docstring);
    the trainer stops it at ``max_steps``."""

    def __init__(self, items: list[PromptItem], per_rank: int, world: int, rank: int, seed: int, start: int = 0):
        if not items:
            raise DataError("no training prompts left (all were rejected or over the length limit)")
        self.items, self.per_rank, self.world, self.rank = items, per_rank, world, rank
        self.seed, self.start = seed, start

    def batch(self, step: int) -> list[PromptItem]:
        """The prompts of ``step`` on this rank."""
        n = len(self.items)
        first = step * self.per_rank * self.world + self.rank * self.per_rank
        out = []
        perm_epoch, perm = -1, []
        for k in range(first, first + self.per_rank):
            epoch, pos = divmod(k, n)
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, _permutation(n, self.seed, epoch)
            out.append(self.items[perm[pos]])
        return out

    def __iter__(self):
        step = self.start
        while True:
            yield self.batch(step)
            step += 1


def _identity(batch: Any) -> Any:
    return batch


class ToolUseDataModule(L.LightningDataModule):
    """Prompts for ``fit`` (and samples for ``sft``). ``prompts_per_step`` is per rank."""

    def __init__(self, config: DataConfig, tokenizer: Any, prompts_per_step: int = 4):
        super().__init__()
        # Raw data is prepared once, by global rank 0, into data.cache_dir (which every node must
        # see: a shared filesystem); the other ranks wait at Lightning's barrier, then read it.
        self.prepare_data_per_node = False
        self.config = config
        self.tokenizer = tokenizer
        self.prompts_per_step = prompts_per_step
        self.train_items: list[PromptItem] = []
        self.val_items: list[PromptItem] = []
        self.counts: dict[str, int] = {}
        self._directory: Path | None = None

    @property
    def directory(self) -> Path:
        """The prepared dataset's directory (hashing raw inputs once per DataModule)."""
        if self._directory is None:
            self._directory = prepared_dir(self.config)
        return self._directory

    def prepare_data(self) -> None:
        """Run ``restlit prepare`` on ``data.raw`` once (global rank 0 only, as Lightning calls it
        with ``prepare_data_per_node = False``)."""
        if self.config.prepared:
            return
        out = self.directory
        if (out / "manifest.json").is_file():
            return
        from restlit.data_prep.inputs import InputError
        from restlit.data_prep.pipeline import prepare

        with _entry_lock(out):
            if (out / "manifest.json").is_file():  # another run prepared it while this one waited
                return
            try:
                prepare(self.config.raw, out, format=self.config.format, on_invalid=self.config.on_invalid,
                        val_fraction=self.config.val_fraction, seed=self.config.seed)
            except InputError as exc:
                raise DataError(str(exc)) from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        from restlit.data_prep.samples import read_split

        directory = self.directory
        if not (directory / "manifest.json").is_file():
            raise DataError(f"data: {directory} is not a `restlit prepare` output (no manifest.json)")
        try:
            train, validation = read_split(directory, "train"), read_split(directory, "validation")
        except ValueError as exc:
            raise DataError(f"data: {exc}") from None
        if train is None:
            raise DataError(f"data: {directory} has no train split; prepare it again")
        self.counts = {}
        self.train_items = self._encode(train, "train", self.config.limit)
        if validation is not None:
            self.val_items = self._encode(validation, "validation", self.config.val_limit)

    def _encode(self, samples: list[Any], split: str, limit: int) -> list[PromptItem]:
        if limit:
            samples = samples[:limit]
        items = []
        dropped = 0
        fmt = get_format(self.config.tool_format)  # renders the structured samples in the run's format
        for sample in samples:
            ids = fmt.prompt_ids(self.tokenizer, fmt.messages(sample.tools, sample.history))
            if len(ids) > self.config.max_prompt_tokens:
                dropped += 1
                continue
            items.append(PromptItem(sample.id, ids, sample.target, fmt.render_target(sample.target)))
        self.counts[f"{split}_prompts"] = len(items)
        self.counts[f"{split}_dropped_too_long"] = dropped
        return items

    def train_dataloader(self) -> DataLoader:
        """Batches of prompts, one per step, starting at the (restored) global step."""
        trainer = self.trainer
        world = trainer.world_size if trainer else 1
        rank = trainer.global_rank if trainer else 0
        start = trainer.global_step if trainer else 0
        steps = StepBatches(self.train_items, self.prompts_per_step, world, rank, self.config.seed, start)
        return DataLoader(steps, batch_size=None, collate_fn=_identity, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """The validation prompts (at most ``data.val_limit``), ``prompts_per_step`` at a time."""
        chunks = [self.val_items[i : i + self.prompts_per_step]
                  for i in range(0, len(self.val_items), self.prompts_per_step)]
        return DataLoader(chunks, batch_size=None, collate_fn=_identity, num_workers=0)
