"""``SFTModule``: the supervised warm start on prepared targets.

Small models cannot produce a tool call at all before they have seen the format; this module
trains on the prepared references with the loss on target tokens only::

    loss = - sum_{t in target} log p(y_t | prompt, y_<t) / #target tokens in the batch

Each sample is its chat-templated prompt followed by its canonical target and EOS; the log-probs
come from the hidden states through the chunked LM head (``restlit.objective``), so the
``[T, V]`` logits never exist. The loss is a sum over samples, so each sample runs its own forward
and backward (its share ``- sum_t log p / #target tokens in the batch``, gradients accumulating):
the same gradient as one backward of the batch, with one sample's activations in memory at a time
instead of the whole batch's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from restlit.config import RunConfig
from restlit.objective import logprobs_and_entropy_from_hidden
from restlit.training import optim
from restlit.training.data import PromptItem


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of ``policy`` on ``PromptItem.target_text``."""

    def __init__(self, config: RunConfig, policy: Any, tokenizer: Any):
        super().__init__()
        self.automatic_optimization = False  # one backward per sample (see the module docstring)
        self.config = config
        self.policy = policy
        self.tokenizer = tokenizer

    def target_ids(self, item: PromptItem) -> list[int]:
        """The target's token ids, ending with EOS."""
        return self.tokenizer(item.target_text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def sample_ids(self, item: PromptItem) -> tuple[list[int], int]:
        """A sample's token ids (prompt + target, cut at ``sft.max_seq_tokens``) and how many of
        them are target tokens."""
        ids = (item.prompt_ids + self.target_ids(item))[: self.config.sft.max_seq_tokens]
        return ids, max(0, len(ids) - len(item.prompt_ids))

    def sample_logp(self, item: PromptItem) -> torch.Tensor:
        """Log-probs of the target tokens of one sample given its prompt, ``[n_target]``."""
        return self._target_logp(*self.sample_ids(item))

    def _target_logp(self, ids: list[int], n_target: int) -> torch.Tensor:
        """:meth:`sample_logp` from the sample's :meth:`sample_ids`."""
        if n_target == 0:
            return torch.zeros(0, device=self.device)
        n_prompt = len(ids) - n_target
        input_ids = torch.as_tensor(ids, device=self.device)[None]
        hidden = self.policy.get_decoder()(input_ids=input_ids).last_hidden_state[0]
        # position i predicts token i + 1: the targets are predicted from positions P-1 .. L-2
        pred = hidden[n_prompt - 1 : len(ids) - 1]
        tokens = input_ids[0, n_prompt:]
        logp, _ = logprobs_and_entropy_from_hidden(pred, self.policy.get_output_embeddings().weight, tokens,
                                                   chunk_size=self.config.objective.logprob_chunk_size)
        return logp

    def on_train_start(self) -> None:
        self.policy.train()  # from_pretrained returns eval mode; checkpointing needs train mode

    def batch_loss(self, batch: list[PromptItem], backward: Callable[[torch.Tensor], Any] | None = None
                   ) -> tuple[torch.Tensor, int]:
        """The mean negative log-likelihood of the batch's target tokens, and their number. With
        ``backward``, each sample's share of the loss goes through ``backward`` as soon as it is
        computed (its graph freed before the next sample's forward) and the returned loss is
        detached."""
        samples = [self.sample_ids(item) for item in batch]
        n = sum(n_target for _, n_target in samples)
        total = torch.zeros((), device=self.device)
        for ids, n_target in samples:
            share = -self._target_logp(ids, n_target).sum() / max(n, 1)
            if backward is not None and share.requires_grad:
                backward(share)
                share = share.detach()
            total = total + share
        return total, n

    def training_step(self, batch: list[PromptItem], batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        loss, n = self.batch_loss(batch, backward=self.manual_backward)
        grad_norm = optim.clip_gradients(self.trainer.strategy.model, self.policy, self.config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # free the gradients until the next batch
        self.lr_schedulers().step()
        self.log_dict({"sft/loss": loss, "sft/target_tokens": float(n), "sft/grad_norm": grad_norm},
                      on_step=True, on_epoch=False, batch_size=len(batch))
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=len(batch))

    def validation_step(self, batch: list[PromptItem], batch_idx: int) -> None:
        """The held-out target loss, every ``trainer.val_every`` steps (``val/sft_loss``)."""
        loss, _ = self.batch_loss(batch)
        self.log("val/sft_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch))

    def configure_optimizers(self) -> Any:
        """``optim``'s AdamW at ``sft.lr``, with a constant LR (:func:`restlit.training.optim.configure`)."""
        return optim.configure(self.policy, self.config.optim, self.trainer.max_steps, lr=self.config.sft.lr,
                               schedule=False)
