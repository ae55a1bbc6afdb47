"""The training forward pass: logits only where a label is predicted.

API (stable):

    labeled_logits(model, input_ids, attention_mask, labels, ignore_index=-100)
        -> (logits [B, K, V], targets [B, K])
    ``labels`` are aligned with ``input_ids`` (``labels[b, t]`` is the token at ``t``, or
    ``ignore_index`` for prompt/padding). Position ``t`` predicts ``labels[b, t + 1]``; only the
    K positions (the union over the batch) that predict at least one label get logits — the LM head
    and the softmax are not computed over prompt tokens. ``targets[b, k]`` is the label predicted
    at the k-th kept position, or ``ignore_index``. Combine with psr.training.losses.sft_loss /
    token_logps.
"""

from __future__ import annotations

import torch

from psr.training.losses import IGNORE_INDEX


def labeled_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    shifted = torch.full_like(labels, ignore_index)
    shifted[:, :-1] = labels[:, 1:]
    keep = (shifted != ignore_index).any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:  # nothing to predict: still run the model (FSDP collectives must match)
        keep = torch.zeros(1, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False)
    return out.logits, shifted[:, keep]
