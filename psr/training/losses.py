"""Training losses: short pure functions of logits / log-probs.

SFT (this section): masked cross-entropy on response tokens.

    sft_loss(logits, targets, ignore_index=-100) -> (loss_sum, n_tokens)
        ``logits[b, t]`` predicts ``targets[b, t]`` (already aligned: use
        psr.training.forward.labeled_logits, or shift yourself); positions whose target is
        ``ignore_index`` (prompt, padding) contribute nothing. Returns the *sum* of token
        losses in fp32 and the number of counted tokens, so callers can normalise over a whole
        global batch (all micro-batches and ranks) — the mean over tokens of the global batch is
        then independent of how it is split.
    token_logps(logits, targets, ignore_index=-100) -> per-token log p(target) (0 where ignored)

The step-DPO and PRM losses are appended below by their recipes' author.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, int]:
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_targets = targets.reshape(-1)
    loss_sum = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    return loss_sum, int((flat_targets != ignore_index).sum())


def token_logps(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    mask = targets != ignore_index
    safe = targets.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask
